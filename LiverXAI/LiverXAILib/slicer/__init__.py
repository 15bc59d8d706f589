"""The Slicer side: the Logic, MRML scene and nodes, 3D display, exports and dependencies.

The only subpackage that imports ``slicer``, ``vtk``, ``qt`` or ``ctk``."""
