"""What the settings are derived from: what a profile decides (`INPUTS`),
and the environment (or `.env`), read through the readers here.

A profile sets `INPUTS`, then imports `base`, which reads them where it reads
the environment: the test profile's CACHE_PATH, for one, is where base puts
the images and the embedded database's neighbours, so nothing derived has
to be patched afterwards. Unset, each has the value `base` gives it.
A wrong value in the environment stops start-up with ImproperlyConfigured
naming the variable.
"""

from collections.abc import Callable
from pathlib import Path
from typing import Any

import environ
from django.core.exceptions import ImproperlyConfigured

INPUTS: dict[str, Any] = {}

BASE_DIR = Path(__file__).resolve().parent.parent.parent

env = environ.Env()
if (BASE_DIR / ".env").is_file():
    environ.Env.read_env(BASE_DIR / ".env", overwrite=False)


def _read(cast: Callable[..., Any], name: str, **kwargs: Any) -> Any:
    try:
        return cast(name, **kwargs)
    except ImproperlyConfigured:
        raise
    except (ValueError, TypeError, KeyError) as exc:
        raise ImproperlyConfigured(f"{name} has an invalid value: {exc}") from None


def env_number(name: str, default: float, *, minimum: float = 0, integer: bool = False) -> Any:
    """A number from the environment, at least `minimum`."""
    value = _read(env.int if integer else env.float, name, default=default)
    if value < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum}, not {value}")
    return value


# What a yes/no variable may say; anything else is a mistake, not a "no".
FLAG_VALUES = {"true": True, "yes": True, "on": True, "1": True}
FLAG_VALUES |= {"false": False, "no": False, "off": False, "0": False}


def env_flag(name: str, default: bool) -> bool:
    """A yes or no from the environment (true/false, yes/no, on/off, 1/0)."""
    raw = env_str(name, "").strip().lower()
    if not raw:
        return default
    if raw not in FLAG_VALUES:
        raise ImproperlyConfigured(f"{name} must be true or false, not {raw!r}")
    return FLAG_VALUES[raw]


def env_str(name: str, default: str | None = None) -> str:
    """A string from the environment; without a default it is required."""
    if default is None:
        value = _read(env.str, name)
    else:
        value = _read(env.str, name, default=default)
    return str(value)


# Secrets may come from files instead (Docker's and Kubernetes' secrets):
# NAME_FILE names a file whose content, less its trailing newline, is NAME.
SECRET_FILE_VARIABLES = ("KT_AUTH_TOKEN", "SECRET_KEY", "DATABASE_URL", "CHART_URL_KEYS")


def env_secret_file(name: str) -> str | None:
    """The content of the file that `name`_FILE names, if it is set; setting
    both `name` and `name`_FILE is an error, and so is a file that cannot be
    read or is empty. Read here, not put into the environment: the processes
    `manage.py serve` starts read the file themselves."""
    file_variable = f"{name}_FILE"
    path = env_str(file_variable, "")
    if not path:
        return None
    if name in env:
        raise ImproperlyConfigured(f"{name} and {file_variable} are both set: set one of them")
    try:
        value = Path(path).read_text().rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "it is not UTF-8 text"
        raise ImproperlyConfigured(f"{file_variable}: {path} cannot be read ({reason})") from None
    if not value:
        raise ImproperlyConfigured(f"{file_variable}: {path} is empty")
    return value


SECRETS_FROM_FILES = {
    name: value for name in SECRET_FILE_VARIABLES if (value := env_secret_file(name)) is not None
}
