"""The recipe: one typed, validated TOML file that describes a generation run.

Every field has a default, so an empty recipe is valid; CLI flags override the file.
Errors name the file and the offending field in one line.

Example recipe::

    seed = 7
    dialogues = 100

    [models.assistant]
    backend = "openai"
    model = "gpt-4o-mini"
    base_url = "https://api.openai.com/v1"

    [world]
    topics = ["Astronomy", "Cooking"]
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from .backends.config import EMBEDDED_NAMES, ModelConfig, auto_profile
from .core.config import ConfigError, Strict, load_toml_model
from .core.hashing import hexdigest, named_digest
from .core.paths import response_cache_path

#: a recipe that cannot be used; the message is one line naming the file and field
RecipeError = ConfigError

__all__ = ["ModelConfig", "Models", "Recipe", "RecipeError", "builtin_digest", "content_digest", "load_recipe"]


ROLE_DEFAULTS: dict[str, dict[str, Any]] = {
    "user": {"temperature": 0.9},
    "assistant": {"temperature": 0.7},
    "planner": {"temperature": 0.8},
}
#: each profile's token caps per role (a role's own max_tokens overrides them)
PROFILE_CAPS: dict[str, dict[str, int]] = {
    "small": {"user": 64, "assistant": 256, "planner": 200},
    "real": {"user": 256, "assistant": 2048, "planner": 1024},
}
# What a partial [models.planner] table inherits from the user role (it plans on that model).
_INHERITED = ("backend", "model", "base_url", "api_key_env")


def _resolve_role(role: str, given: dict[str, Any], base: dict[str, Any] | None = None) -> dict[str, Any]:
    """A role's table with its profile and caps filled in: fields it sets win, then (the
    planner) the user role's endpoint, then the role's defaults and its profile's caps."""
    data = {**{k: base[k] for k in _INHERITED if base and k in base and k not in given}, **given}
    profile = data.get("profile") or auto_profile(data.get("backend", "local"), data.get("model", EMBEDDED_NAMES[0]))
    return {**ROLE_DEFAULTS[role], "max_tokens": PROFILE_CAPS[profile][role], **data, "profile": profile}


class Models(Strict):
    """The models of each role. A role's table only needs the fields it changes: the
    rest come from that role's defaults and its profile (``small`` for the embedded model,
    ``real`` for any other); a partial ``[models.planner]`` table plans on the user role's
    model and endpoint."""

    user: ModelConfig = Field(default_factory=lambda: ModelConfig(**_resolve_role("user", {})))
    assistant: ModelConfig = Field(default_factory=lambda: ModelConfig(**_resolve_role("assistant", {})))
    # Plans topics and questions; defaults to the user model's settings.
    planner: ModelConfig | None = None

    @model_validator(mode="before")
    @classmethod
    def _role_defaults(cls, data: Any) -> Any:
        if isinstance(data, dict):
            data = dict(data)
            for role in ("user", "assistant"):
                if isinstance(data.get(role), dict):
                    data[role] = _resolve_role(role, data[role])
            if isinstance(data.get("planner"), dict):
                user = data.get("user") if isinstance(data.get("user"), dict) else {}
                data["planner"] = _resolve_role("planner", data["planner"], user)
        return data

    def planner_config(self) -> ModelConfig:
        if self.planner is not None:
            return self.planner
        profile = self.user.profile or auto_profile(self.user.backend, self.user.model)
        return self.user.model_copy(update={"temperature": ROLE_DEFAULTS["planner"]["temperature"],
                                            "max_tokens": PROFILE_CAPS[profile]["planner"]})

    def profiles(self) -> dict[str, str]:
        """The effective profile of each role."""
        roles = {"user": self.user, "assistant": self.assistant, "planner": self.planner_config()}
        return {name: cfg.profile or auto_profile(cfg.backend, cfg.model) for name, cfg in roles.items()}


class DialogueConfig(Strict):
    """How the two roles talk: round range, user-simulator prompt set, repair bounds."""

    min_rounds: int | None = Field(None, ge=1)
    max_rounds: int | None = Field(None, ge=1)
    user_prompts: Literal["task", "persona"] = "task"
    personas_file: str | None = None
    max_regenerations: int = Field(2, ge=0)
    # A reply cut by max_tokens: "mark" keeps it (listed in meta.truncated_turns), "end" keeps it
    # as the last turn and stops, "drop" removes it (and the user turn it answered) and stops,
    # so no cut text passes as complete.
    on_truncated: Literal["mark", "end", "drop"] = "mark"

    @model_validator(mode="after")
    def _order(self) -> DialogueConfig:
        if self.min_rounds and self.max_rounds and self.min_rounds > self.max_rounds:
            raise ValueError("min_rounds must not exceed max_rounds")
        return self


class WorldConfig(Strict):
    """Sector 1, Questions about the World."""

    topics: list[str] | None = None
    topics_file: str | None = None
    subtopics_per_request: int = Field(10, ge=1, le=50)
    # Subtopics over all topics (the paper's 1,100+): each topic asks for its share as its
    # quota needs them, before it goes into related questions.
    subtopics: int = Field(1100, ge=1)
    questions_per_subtopic: int = Field(10, ge=1, le=10)
    related_per_question: int = Field(10, ge=1, le=10)
    max_plan_waves: int = Field(12, ge=1)


class KindRatio(Strict):
    """Relative shares of the three entity question kinds (the seed's 200k:250k:50k)."""

    specific: float = Field(200_000, ge=0)
    general: float = Field(250_000, ge=0)
    meta: float = Field(50_000, ge=0)

    @model_validator(mode="after")
    def _some(self) -> KindRatio:
        if self.specific + self.general + self.meta <= 0:
            raise ValueError("at least one kind needs a positive share")
        return self


class EntitiesConfig(Strict):
    """Sector 1b, common real-world entities: entity -> meta questions -> specific and general questions."""

    entities: list[str] | None = None
    entities_file: str | None = None  # TXT, CSV or JSONL: one entity a row, optional type/description
    meta_per_entity: int = Field(5, ge=1, le=20)
    specific_per_meta: int = Field(10, ge=1, le=30)
    general_per_meta: int = Field(20, ge=1, le=30)
    ratio: KindRatio = Field(default_factory=KindRatio)
    max_plan_waves: int = Field(12, ge=1)


class WritingConfig(Strict):
    """Sector 2, Writing and Creation: writing types -> instructions -> detailed instructions."""

    types: list[str] | None = None
    types_file: str | None = None
    # Distinct instructions per type: 0 = as many as the type's quota (each opens one dialogue);
    # a positive cap limits the type to that many dialogues (no instruction is used twice).
    instructions_per_type: int = Field(0, ge=0)
    instructions_per_request: int = Field(10, ge=1, le=50)
    expand_share: float = Field(0.8, ge=0.0, le=1.0)
    max_plan_waves: int = Field(12, ge=1)


MATERIAL_TASKS = ("rewriting", "continuation", "summarisation", "inference", "question answering", "translation")


class MaterialsConfig(Strict):
    """Sector 3, Assistance on Existent Materials: passages -> instructions -> templated openings."""

    # JSONL (C4's *.json.gz too) / Parquet / text files, globs, folders, datasets save_to_disk folders;
    # default: the bundled sample
    files: list[str] | None = None
    dataset: str | None = None  # a Hugging Face dataset name, streamed (needs a reachable hub)
    dataset_config: str | None = None
    split: str = "train"
    text_field: str = "text"
    min_chars: int = Field(150, ge=1)  # ~30 English words; ~150 Chinese characters
    max_chars: int = Field(4000, ge=1)
    sample_rate: float = Field(1.0, gt=0.0, le=1.0)  # keep this share of eligible passages (seeded)
    instructions_per_passage: int = Field(5, ge=1, le=5)
    tasks: list[Literal[MATERIAL_TASKS]] = Field(default_factory=lambda: list(MATERIAL_TASKS))  # type: ignore[valid-type]
    max_passages: int = Field(0, ge=0)  # 0 = as many as the dialogues need
    # "hash": a seeded bottom-k over the whole corpus (read once); "file": corpus order, read
    # only as far as needed. Default: hash for files, file for a hub dataset.
    order: Literal["hash", "file"] | None = None

    @property
    def passage_order(self) -> str:
        return self.order or ("file" if self.dataset else "hash")

    @model_validator(mode="after")
    def _bounds(self) -> MaterialsConfig:
        if self.min_chars > self.max_chars:
            raise ValueError("min_chars must not exceed max_chars")
        if self.dataset and self.order == "hash":
            raise ValueError("order = 'hash' reads the whole corpus; a hub dataset is streamed in its own order "
                             "(use order = 'file', or download it and use files)")
        if not self.tasks:
            raise ValueError("tasks must name at least one task")
        return self


class MixSector(Strict):
    """One sector of ``generate all``: its quota (a count, or a share of ``dialogues``) and models."""

    dialogues: int | None = Field(None, ge=0)
    share: float | None = Field(None, ge=0.0)
    # Per-role overrides merged over the recipe's [models]; only the fields given change.
    models: dict[Literal["user", "assistant", "planner"], ModelConfig] = Field(default_factory=dict)


class MixConfig(Strict):
    """``generate all``: which sectors, and each one's quota and models. With no sectors
    listed, every sector gets an equal share."""

    sectors: dict[str, MixSector] = Field(default_factory=dict)


SECTOR_SECTIONS = ("world", "entities", "writing", "materials")


class Recipe(Strict):
    """A whole run. Fields marked *runtime* do not change outputs and are left out of
    the fingerprint, so changing them never invalidates an output folder."""

    seed: int = 0
    language: str = "en"
    prompts_dir: str | None = None
    dialogues: int = Field(20, ge=1)  # runtime: a larger number extends a finished run
    out: str | None = None  # runtime
    concurrency: int = Field(16, ge=1)  # runtime
    max_total_tokens: int = Field(0, ge=0)  # runtime (0 = unlimited)
    # runtime: replay model calls from a response cache (true = <cache root>/responses.sqlite, or a path)
    cache: bool | str = False
    models: Models = Field(default_factory=Models)
    dialogue: DialogueConfig = Field(default_factory=DialogueConfig)
    world: WorldConfig = Field(default_factory=WorldConfig)
    entities: EntitiesConfig = Field(default_factory=EntitiesConfig)
    writing: WritingConfig = Field(default_factory=WritingConfig)
    materials: MaterialsConfig = Field(default_factory=MaterialsConfig)
    mix: MixConfig = Field(default_factory=MixConfig)
    # Later stages' tables (validated by `ultrachat filter --config`), kept in one recipe file.
    filter: dict[str, Any] = Field(default_factory=dict)

    # runtime: resume a folder whose run began with other built-in prompts (an ultrachat upgrade)
    upgrade_prompts: bool = False

    @field_validator("language")
    @classmethod
    def _known_language(cls, value: str) -> str:
        from importlib import resources

        known = sorted(e.name for e in resources.files("ultrachat.prompts").iterdir() if e.is_dir()
                       and not e.name.startswith("_"))
        if value not in known:
            raise ValueError(f"no built-in prompts for '{value}' (choose {', '.join(known)})")
        return value

    RUNTIME_FIELDS: ClassVar[frozenset[str]] = frozenset(
        {"dialogues", "out", "concurrency", "max_total_tokens", "cache", "filter", "upgrade_prompts"})
    # The user files (recipe field -> its sector, None for every sector) whose contents shape outputs.
    INPUT_FILES: ClassVar[dict[str, str | None]] = {
        "prompts_dir": None, "dialogue.personas_file": None, "world.topics_file": "world",
        "entities.entities_file": "entities", "writing.types_file": "writing"}

    @model_validator(mode="after")
    def _profile_dialogue(self) -> Recipe:
        """Dialogue settings the recipe leaves unset follow the roles' profiles: a ``real``
        user simulator gets the persona prompts (the whole dialogue, roles flipped, a persona
        per dialogue); a ``real`` assistant's cut reply is retried then dropped, never kept."""
        profiles = self.models.profiles()
        given = self.dialogue.model_fields_set
        if "user_prompts" not in given and profiles["user"] == "real":
            self.dialogue.user_prompts = "persona"
        if "on_truncated" not in given and profiles["assistant"] == "real":
            self.dialogue.on_truncated = "drop"
        return self

    def out_dir(self, sector: str) -> Path:
        return Path(self.out) if self.out else Path("ultrachat-out") / sector

    def cache_path(self) -> Path | None:
        """The response cache file the recipe asks for, or ``None``."""
        if self.cache is False or self.cache == "":
            return None
        if self.cache is True:
            return response_cache_path()
        return Path(self.cache).expanduser()

    def fingerprint_payload(self, sector: str) -> dict[str, Any]:
        """Everything that can change the outputs of ``sector`` (runtime fields excluded).

        Limits such as ``max_in_flight`` or timeouts do not change what a model says, so
        they are dropped from each model config as well.
        """
        # Other sectors' sections and the mix table cannot change this sector's outputs.
        skip = {"mix", *(name for name in SECTOR_SECTIONS if name != sector)}
        data = self.model_dump(mode="json", exclude=set(self.RUNTIME_FIELDS) | skip)
        for cfg in data["models"].values():
            if cfg:
                if cfg.get("profile") == auto_profile(cfg["backend"], cfg["model"]):
                    cfg.pop("profile")  # the default: folders made before profiles keep their fingerprint
                for key, default in (("extra_body", {}), ("keep_reasoning", False), ("context_length", None)):
                    if cfg.get(key, default) == default:
                        cfg.pop(key, None)  # unset: folders made before the field keep their fingerprint
                for key in ("max_in_flight", "requests_per_minute", "tokens_per_minute", "timeout_s", "max_retries",
                            "batch_wait_s", "batch_poll_s"):
                    cfg.pop(key, None)
        data["sector"] = sector
        # Identity is contents, not paths: an edited prompt or topic file is another run.
        data["inputs"] = self.input_digests(sector)
        data["builtin"] = builtin_digest(self.language)
        return data

    def input_digests(self, sector: str) -> dict[str, str]:
        """SHA-256 (16 hex) of each user file or prompt folder this sector reads."""
        out: dict[str, str] = {}
        for dotted, only in self.INPUT_FILES.items():
            value: Any = self
            for part in dotted.split("."):
                value = getattr(value, part)
            if value and only in (None, sector):
                out[dotted] = content_digest(Path(value))
        return out

    def fingerprint(self, sector: str) -> str:
        return hexdigest(json.dumps(self.fingerprint_payload(sector), sort_keys=True))[:16]


def content_digest(path: Path, pattern: str = "*") -> str:
    """SHA-256 (16 hex) of a file's bytes, or of a folder's ``pattern`` files (names and
    bytes, sorted); ``missing`` when there is nothing (the run reports that itself)."""
    if path.is_dir():
        return named_digest((child.name, child.read_bytes())
                            for child in sorted(p for p in path.glob(pattern) if p.is_file()))
    return hexdigest(path.read_bytes())[:16] if path.is_file() else "missing"


def builtin_digest(language: str) -> str:
    """SHA-256 (16 hex) of the shipped prompts and lists of ``language``: it changes when an
    upgrade of ultrachat changes what the built-in prompts say."""
    from importlib import resources

    folders = [resources.files(package) / language for package in ("ultrachat.prompts", "ultrachat.resources")]
    return named_digest((entry.name, entry.read_bytes()) for folder in folders if folder.is_dir()
                        for entry in sorted(folder.iterdir(), key=lambda e: e.name) if entry.is_file())


def load_recipe(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> Recipe:
    """Read a TOML recipe (or start from defaults) and apply ``overrides``.

    Overrides use dotted keys, e.g. ``{"dialogues": 5, "models.user.max_tokens": 48}``;
    ``None`` values are ignored so CLI flags left unset keep the file's value.
    """
    return load_toml_model(Recipe, path, overrides, "recipe")
