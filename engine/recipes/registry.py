"""Which recipe trains which architecture: declared by the recipe modules themselves.

A recipe module (any `engine/recipes/<name>.py`) declares what it handles at import time:

    from engine.recipes.registry import Family, register

    register(Family(key="seq2seq", kind="seq2seq", module=__name__,
                    model_types=("moonshine", "canary"), aliases=()))

and provides `make_recipe(key)`. Nothing else in voxtune names families: the catalog
(data/catalog.json) stores the recipe `key` per model, a local checkpoint folder is matched by
the `model_type` in its config.json, and a config.json written by an older voxtune names a
key that some family still lists in `aliases`.

Light module (no torch, no numpy): `families()` imports the recipe modules, which import
torch only inside functions, so light processes (CLI, TUI) may call it. The import happens
once, on first use.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field

from engine.errors import VoxtuneError

KINDS = ("seq2seq", "speech-to-text", "ctc", "audio-llm")


class UnknownRecipe(VoxtuneError, LookupError):
    """No recipe module declares this key or model_type; the message lists the known ones."""


@dataclass(frozen=True)
class Family:
    """One recipe's declaration.

    key          catalog `recipe` value and config.json `recipe` (what the worker asks for)
    kind         seq2seq | speech-to-text | ctc | audio-llm: what the estimator and the UI
                 need to know (sequence layout; whether output can be rewritten or only deleted)
    module       the module that builds it (`make_recipe(key)`)
    model_types  config.json `model_type` values of checkpoints this recipe loads
    aliases      older recipe keys (config.json written by earlier voxtune versions)
    trainable    False: listed for estimates only; `reason` says why
    """

    key: str
    kind: str
    module: str
    model_types: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()
    trainable: bool = True
    reason: str | None = None
    notes: dict = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"recipe {self.key!r}: kind {self.kind!r} is not one of {', '.join(KINDS)}")


_FAMILIES: dict[str, Family] = {}
_SCANNED = False
# modules under engine/recipes that hold shared code, not families
_HELPERS = {"base", "registry", "windowed"}


def register(family: Family) -> Family:
    """Called by a recipe module at import time. A key or model_type claimed twice is a bug."""
    old = _FAMILIES.get(family.key)
    if old is not None and old.module != family.module:
        raise ValueError(f"recipe key {family.key!r} declared by {old.module} and {family.module}")
    for other in _FAMILIES.values():
        if other.key == family.key:
            continue
        clash = (set(other.model_types) & set(family.model_types)) or \
                ({other.key, *other.aliases} & {family.key, *family.aliases})
        if clash:
            raise ValueError(f"{sorted(clash)} claimed by recipes {other.key!r} ({other.module}) "
                             f"and {family.key!r} ({family.module})")
    _FAMILIES[family.key] = family
    return family


def _scan() -> None:
    global _SCANNED
    if _SCANNED:
        return
    import engine.recipes as pkg

    for info in pkgutil.iter_modules(pkg.__path__):
        if info.name not in _HELPERS and not info.name.startswith("_"):
            importlib.import_module(f"{pkg.__name__}.{info.name}")
    _SCANNED = True


def families() -> list[Family]:
    """Every declared family, in key order."""
    _scan()
    return [_FAMILIES[k] for k in sorted(_FAMILIES)]


def family(key: str) -> Family:
    """The family for a recipe key or an older alias; UnknownRecipe lists the known keys."""
    _scan()
    if key in _FAMILIES:
        return _FAMILIES[key]
    for f in _FAMILIES.values():
        if key in f.aliases:
            return f
    raise UnknownRecipe(f"no recipe {key!r}; known: {', '.join(sorted(_FAMILIES))}", field="recipe")


def for_model_type(model_type: str) -> Family:
    """The family whose recipe loads checkpoints of this config.json `model_type`."""
    _scan()
    for f in _FAMILIES.values():
        if model_type in f.model_types:
            return f
    known = sorted({t for f in _FAMILIES.values() for t in f.model_types})
    raise UnknownRecipe(f"model_type {model_type!r} is not an audio-to-text architecture voxtune trains "
                        f"(supported: {', '.join(known)})", field="model")


def model_types() -> dict[str, tuple[str, str]]:
    """model_type -> (kind, recipe key), for every declared model_type."""
    return {t: (f.kind, f.key) for f in families() for t in f.model_types}


def make(key: str, **options):
    """The Recipe object for a key or alias (imports its module)."""
    fam = family(key)
    module = importlib.import_module(fam.module)
    return module.make_recipe(key, **options) if options else module.make_recipe(key)
