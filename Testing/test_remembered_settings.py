"""Device, batch size and explained classes remembered across Slicer sessions."""

from __future__ import annotations

from LiverXAILib.slicer.remembered_settings import PREFIX, load_settings, save_settings


class IniSettings:
    """What qt.QSettings with an INI file gives back after a restart: every value a string."""

    def __init__(self) -> None:
        self.stored: dict[str, str] = {}

    def value(self, key, default=None):
        return self.stored.get(key, default)

    def setValue(self, key, value) -> None:
        self.stored[key] = str(value)


def test_defaults_when_nothing_is_remembered():
    assert load_settings(IniSettings()) == {
        "device": "auto",
        "batchSize": 16,
        "explainClasses": ["liver", "tumor"],
    }


def test_saved_choices_come_back_after_a_restart():
    settings = IniSettings()
    save_settings(settings, "cpu", 32, ["tumor"])
    assert settings.stored[PREFIX + "batchSize"] == "32"
    assert load_settings(settings) == {
        "device": "cpu",
        "batchSize": 32,
        "explainClasses": ["tumor"],
    }
    save_settings(settings, "cuda", 8, [])
    assert load_settings(settings)["explainClasses"] == []


def test_damaged_values_fall_back_to_defaults():
    settings = IniSettings()
    settings.stored.update(
        {
            PREFIX + "device": "tpu",
            PREFIX + "batchSize": "many",
            PREFIX + "explainClasses": "x,liver",
        }
    )
    assert load_settings(settings) == {
        "device": "auto",
        "batchSize": 16,
        "explainClasses": ["liver"],
    }
    settings.stored[PREFIX + "batchSize"] = "1000"
    assert load_settings(settings)["batchSize"] == 16
