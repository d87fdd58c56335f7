"""What a profile decides before `base` derives the settings from it.

A profile sets these, then imports `base`, which reads them where it reads
the environment: the test profile's CACHE_PATH, for one, is where base puts
the images and the embedded database's neighbours, so nothing derived has
to be patched afterwards. Unset, each has the value `base` gives it.
"""

from typing import Any

INPUTS: dict[str, Any] = {}
