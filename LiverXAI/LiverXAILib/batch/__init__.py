"""Segment & Explain over a folder of CTs: cases, lock, settings, summary."""
