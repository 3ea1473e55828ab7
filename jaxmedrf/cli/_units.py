"""``--units HU|mu``: how the commands that project a volume read its intensities.

The rules live in :func:`jaxmedrf.io.attenuation_units`; this module only adds the option and
prints the library's note (a guessed unit, or ``--units`` overriding the file's) as one line on
stderr.
"""

from __future__ import annotations

import sys

import numpy as np

__all__ = ["add_units_argument", "to_attenuation"]

UNITS_HELP = (
    "intensity unit of the volume: HU (Hounsfield units, converted to μ) or mu (already μ in mm⁻¹). "
    "Default: the file's own unit (DICOM CT, a NIfTI/.npz jaxmedrf wrote); a file of unknown unit is "
    "taken as HU when its values look like HU (air near −1000, a note says so) and refused otherwise"
)


def add_units_argument(p, *, help: str = UNITS_HELP) -> None:
    """Adds ``--units {HU,mu}`` (default ``None``: the file's unit, else the HU guess) to parser ``p``."""
    from jaxmedrf.io.volume_data import UNITS

    p.add_argument("--units", choices=UNITS, default=None, help=help)


def to_attenuation(vol, units: str | None, *, mu_water: float | None = None) -> np.ndarray:
    """``vol`` (a :class:`~jaxmedrf.io.VolumeData`) as μ in mm⁻¹, float32; a note goes to stderr.

    Args:
        vol: the loaded volume.
        units: ``--units``: ``None``, ``"HU"`` or ``"mu"``.
        mu_water: μ of water for the HU conversion, mm⁻¹ (default :data:`jaxmedrf.io.MU_WATER`).

    Raises:
        ValueError: as :func:`jaxmedrf.io.attenuation_units` (one line naming ``--units``).
    """
    from jaxmedrf.io import attenuation_units, attenuation_volume

    unit, note = attenuation_units(vol, units=units)
    if note:
        print(f"note: {note}", file=sys.stderr)
    kw = {} if mu_water is None else {"mu_water": mu_water}
    return np.asarray(attenuation_volume(vol.replace(unit=unit), **kw), np.float32)
