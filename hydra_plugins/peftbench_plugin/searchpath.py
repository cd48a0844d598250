"""Make the top-level ``experiments/`` folder a Hydra config group.

Hydra only searches the primary config dir; studies live beside it (not inside ``conf/``) so
that they read as the project's studies rather than its defaults. Adding their parent folder to
the search path exposes them as the group ``experiments`` (``experiments=<study>/<config>``).
Only peftbench's own app is touched: other Hydra apps in the environment see no change.

The parent folder of a checkout is the repository root, so a plain ``file://`` entry would also expose
every other folder there (conf/ a second time, peftbench/, tests/, results/ ...) as a config group: over
a hundred of them, which ``--help`` and tab completion list one by one (15 s). ``ExperimentsConfigSource``
is that folder with only ``experiments/`` visible.
"""

from __future__ import annotations

from hydra._internal.core_plugins.file_config_source import FileConfigSource
from hydra.core.config_search_path import ConfigSearchPath
from hydra.core.object_type import ObjectType
from hydra.plugins.config_source import ConfigLoadError, ConfigResult
from hydra.plugins.search_path_plugin import SearchPathPlugin

GROUP = "experiments"


class ExperimentsConfigSource(FileConfigSource):
    """A folder's ``experiments/`` subtree as Hydra configs; nothing else in that folder exists for Hydra.
    Hydra registers it by its scheme when it scans ``hydra_plugins`` (a ConfigSource is a plugin)."""

    @staticmethod
    def scheme() -> str:
        return "peftbench-experiments"

    @staticmethod
    def _inside(config_path: str) -> bool:
        return config_path.strip("/").split("/")[0] == GROUP

    def load_config(self, config_path: str) -> ConfigResult:
        if not self._inside(config_path):
            raise ConfigLoadError(f"Config not found : {config_path}")
        return super().load_config(config_path)

    def is_group(self, config_path: str) -> bool:
        return config_path.strip("/") == "" or (self._inside(config_path) and super().is_group(config_path))

    def is_config(self, config_path: str) -> bool:
        return self._inside(config_path) and super().is_config(config_path)

    def list(self, config_path: str, results_filter: ObjectType | None) -> list[str]:
        if config_path.strip("/") == "":
            return [name for name in super().list(config_path, results_filter) if name == GROUP]
        return super().list(config_path, results_filter) if self._inside(config_path) else []


class PeftbenchSearchPathPlugin(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        from peftbench.resources import config_dir, resource_root

        ours = str(config_dir()).rstrip("/")
        # Entries may or may not carry the file:// scheme, depending on how the app was started.
        if any(
            (entry.path or "").removeprefix("file://").rstrip("/") == ours for entry in search_path.get_path()
        ):
            scheme = ExperimentsConfigSource.scheme()
            search_path.append(provider="peftbench-experiments", path=f"{scheme}://{resource_root()}")
