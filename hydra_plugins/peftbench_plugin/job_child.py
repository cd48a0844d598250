"""``python -m hydra_plugins.peftbench_plugin.job_child PAYLOAD ANSWER``: one sweep job in a fresh process."""

import sys

from hydra_plugins.peftbench_plugin.subprocess_launcher import child_main

if __name__ == "__main__":
    child_main(sys.argv[1:3])
