"""Make the top-level ``experiments/`` folder a Hydra config group.

Hydra only searches the primary config dir; studies live beside it (not inside ``conf/``) so
that they read as the project's studies rather than its defaults. Adding their parent folder to
the search path exposes them as the group ``experiments`` (``experiments=<study>/<config>``).
Only peftbench's own app is touched: other Hydra apps in the environment see no change.
"""

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin


class PeftbenchSearchPathPlugin(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        from peftbench.resources import config_dir, resource_root

        ours = str(config_dir()).rstrip("/")
        # Entries may or may not carry the file:// scheme, depending on how the app was started.
        if any(
            (entry.path or "").removeprefix("file://").rstrip("/") == ours for entry in search_path.get_path()
        ):
            search_path.append(provider="peftbench-experiments", path=f"file://{resource_root()}")
