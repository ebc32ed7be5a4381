"""Where the default calibration profiles are: the lookup by model, engine and estimator.

``$CONFROUTE_PROFILE_DIR`` first, then the profiles shipped in the package
(``confroute/profile_files``); in each, a profile made on the local engine
(``MODEL/ENGINE/ESTIMATOR.json``) comes before the engine-neutral place
(``MODEL/ESTIMATOR.json``, where the shipped transformers profiles are). Importable from
:mod:`confroute.calibration` too.
"""

from __future__ import annotations

from pathlib import Path

from confroute.settings import environment

__all__ = ["default_profile_path", "profile_search_dirs", "shipped_profiles"]


def profile_search_dirs() -> list[Path]:
    """Where default profiles are looked for: ``$CONFROUTE_PROFILE_DIR``, then the package."""
    dirs = []
    profile_dir = environment().profile_dir
    if profile_dir is not None:
        dirs.append(profile_dir)
    dirs.append(Path(__file__).parent / "profile_files")
    return dirs


def default_profile_path(model: str, estimator: str, backend: str | None = None) -> Path | None:
    """The default profile of a model and estimator on an engine, if one exists.

    Each search directory (:func:`profile_search_dirs`) is read in turn, and in it
    ``DIR/MODEL/ENGINE/ESTIMATOR.json`` (a profile made on ``backend``, e.g. ``llama.cpp``)
    comes before ``DIR/MODEL/ESTIMATOR.json`` (the engine-neutral place: the shipped ones there
    were made on transformers, and a profile records its engine in ``fingerprint.backend``,
    which the router checks either way). confroute ships profiles for the bundled Qwen models
    on transformers and on llama.cpp (rebuild commands in ``docs/calibration.md``);
    ``$CONFROUTE_PROFILE_DIR`` is searched first.
    """
    for directory in profile_search_dirs():
        places = [directory / model / backend] if backend else []
        for place in [*places, directory / model]:
            path = place / f"{estimator}.json"
            if path.is_file():
                return path
    return None


def shipped_profiles() -> list[str]:
    """``model/estimator`` and ``model/engine/estimator`` of every default profile found."""
    found: set[str] = set()
    for directory in profile_search_dirs():
        if directory.is_dir():
            for path in directory.glob("*/**/*.json"):
                found.add(path.relative_to(directory).with_suffix("").as_posix())
    return sorted(found)
