"""Flex Template entry point (FLEX_TEMPLATE_PYTHON_PY_FILE): the launcher calls this file with
the template's parameters as ``--name=value``; txpipe turns them into ``run`` flags and builds
the same pipeline ``python -m txpipe run --runner DataflowRunner`` does."""

import sys

from txpipe.export import launch

if __name__ == "__main__":
    sys.exit(launch())
