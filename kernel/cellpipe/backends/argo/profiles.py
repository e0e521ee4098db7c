"""Named cluster profiles: Argo settings kept outside the notebook (``cellpipe profile``).

A profile is one JSON file, ``<folder>/<NAME>.json``::

    {"description": "the team's cluster",      # optional, shown by `cellpipe profile list`
     "context": "prod",                        # optional: the kubeconfig context to use
     "argo": {"namespace": "ml", "registry": "registry.example.org/team", "existing_claim": "shared"}}

``argo`` takes exactly the keys of the notebook's ``metadata.cellpipe.argo`` (docs/argo.md),
checked the same way. The folder is ``$CELLPIPE_PROFILE_DIR``, else
``$XDG_CONFIG_HOME/cellpipe/profiles`` (``~/.config/cellpipe/profiles``). A command takes
the profile named by ``--profile NAME``, else by ``$CELLPIPE_PROFILE``; ``--profile ''``
takes none. Per key, options win over the notebook, which wins over the profile.

A run keeps the profile it started with (as JSON in its options), so a resume or a detached
driver uses the same settings even if the file changed since. This module only reads and
writes those files; it imports neither ``kubernetes`` nor ``yaml``.
"""

from __future__ import annotations

import difflib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cellpipe.backends.argo.errors import ArgoSettingsError, ProfileError

ENV_PROFILE = "CELLPIPE_PROFILE"
ENV_DIR = "CELLPIPE_PROFILE_DIR"
#: The keys of a profile file besides ``argo``.
KEYS = ("description", "context", "argo")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


@dataclass(frozen=True, slots=True)
class Profile:
    name: str
    path: Path
    description: str = ""
    context: str | None = None
    argo: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "path": str(self.path),
            "description": self.description,
            "context": self.context,
            "argo": dict(self.argo),
        }


def profile_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Where profiles live: ``$CELLPIPE_PROFILE_DIR``, else ``$XDG_CONFIG_HOME/cellpipe/profiles``."""
    env = os.environ if environ is None else environ
    if env.get(ENV_DIR):
        return Path(env[ENV_DIR]).expanduser()
    base = env.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base).expanduser() / "cellpipe" / "profiles"


def profile_names(folder: Path | None = None) -> list[str]:
    """The profiles in ``folder`` (default: :func:`profile_dir`), sorted."""
    folder = profile_dir() if folder is None else folder
    if not folder.is_dir():
        return []
    return sorted(p.stem for p in folder.glob("*.json") if _NAME.match(p.stem))


def selected_name(flag: str | None, environ: Mapping[str, str] | None = None) -> str | None:
    """The profile a command uses: ``--profile`` when given (``''``: none), else
    ``$CELLPIPE_PROFILE``; None when neither names one."""
    env = os.environ if environ is None else environ
    name = flag if flag is not None else env.get(ENV_PROFILE, "")
    return name.strip() or None


def resolve(flag: str | None, folder: Path | None = None) -> Profile | None:
    """The selected profile, loaded and checked; None when none is selected."""
    name = selected_name(flag)
    return load_profile(name, folder) if name else None


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise ProfileError(
            f"{name!r} is not a profile name: use letters, digits, '.', '_' and '-' "
            "(at most 63, starting with a letter or digit)"
        )
    return name


def load_profile(name: str, folder: Path | None = None) -> Profile:
    """Read and check ``<folder>/<name>.json``. Raises ProfileError saying what is wrong; a
    missing profile names the folder looked in and the profiles that are there."""
    folder = profile_dir() if folder is None else folder
    check_name(name)
    path = folder / f"{name}.json"
    if not path.is_file():
        raise ProfileError(_missing(name, folder))
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ProfileError(f"profile {name} ({path}) cannot be read: {exc}") from None
    except ValueError as exc:
        raise ProfileError(f"profile {name} ({path}) is not valid JSON: {exc}") from None
    return from_json(name, path, data)


def from_json(name: str, path: Path, data: Any) -> Profile:
    """A profile's content checked: its keys, and its ``argo`` settings as the notebook's are."""
    where = f"profile {name} ({path})"
    if not isinstance(data, dict):
        raise ProfileError(f"{where}: expects a JSON object with {', '.join(KEYS)}")
    for key in data:
        if key not in KEYS:
            near = difflib.get_close_matches(key, KEYS, n=1)
            hint = f"; did you mean `{near[0]}`?" if near else f"; known: {', '.join(KEYS)}"
            raise ProfileError(f"{where}: {key}: unknown key{hint}")
    description = data.get("description", "")
    if not isinstance(description, str):
        raise ProfileError(f"{where}: description: expects a string (got {description!r})")
    context = data.get("context")
    if context is not None and (not isinstance(context, str) or not context.strip()):
        raise ProfileError(f"{where}: context: expects a kubeconfig context name (got {context!r})")
    argo = data.get("argo", {})
    from cellpipe.backends.argo.manifest import parse_settings

    try:
        parse_settings(argo, where=f"{where}: argo")
    except ProfileError:
        raise
    except ArgoSettingsError as exc:
        raise ProfileError(str(exc)) from None
    return Profile(name, path, description, context, dict(argo))


def write_profile(profile: Profile, *, replace: bool = False) -> Path:
    """Write ``profile`` to its path (checked first). Refuses to overwrite unless ``replace``."""
    checked = from_json(profile.name, profile.path, _content(profile))
    if checked.path.exists() and not replace:
        raise ProfileError(
            f"profile {profile.name} exists ({profile.path}); give --replace to overwrite it"
        )
    checked.path.parent.mkdir(parents=True, exist_ok=True)
    from cellpipe.core.atomic import write_text

    write_text(checked.path, json.dumps(_content(checked), indent=2) + "\n")
    return checked.path


def _content(profile: Profile) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if profile.description:
        out["description"] = profile.description
    if profile.context:
        out["context"] = profile.context
    out["argo"] = dict(profile.argo)
    return out


def _missing(name: str, folder: Path) -> str:
    names = profile_names(folder)
    if not folder.is_dir():
        there = "that folder does not exist"
    elif names:
        there = "profiles there: " + ", ".join(names)
        near = difflib.get_close_matches(name, names, n=1)
        if near:
            there += f"; did you mean `{near[0]}`?"
    else:
        there = "it holds no profiles"
    return (
        f"no profile {name!r} in {folder} ({there}); create one with "
        f"`cellpipe profile add {name} --set namespace=... --set registry=...`, or set "
        f"{ENV_DIR} to the folder that holds it"
    )


@dataclass(frozen=True, slots=True)
class Listed:
    """One file of the profile folder: the profile, or why it cannot be used."""

    name: str
    path: Path
    profile: Profile | None
    error: str = ""

    def to_json(self) -> dict[str, Any]:
        p = self.profile
        return {
            "name": self.name,
            "path": str(self.path),
            "description": p.description if p else "",
            "context": p.context if p else None,
            "argo": dict(p.argo) if p else {},
            "error": self.error,
        }


def list_profiles(folder: Path | None = None) -> list[Listed]:
    """Every profile of ``folder``, a broken one with its error (listing never fails)."""
    folder = profile_dir() if folder is None else folder
    out = []
    for name in profile_names(folder):
        try:
            out.append(Listed(name, folder / f"{name}.json", load_profile(name, folder)))
        except ProfileError as exc:
            out.append(Listed(name, folder / f"{name}.json", None, str(exc)))
    return out
