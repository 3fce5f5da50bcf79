"""Flex Template entry point (FLEX_TEMPLATE_PYTHON_PY_FILE): the launcher calls this file with
the template's parameters as ``--name=value`` (underscored names); txpipe translates them into
``run``'s flags, once (txpipe.flex_template), and builds the same pipeline
``python -m txpipe run --runner DataflowRunner`` does."""

import sys

from txpipe.flex_template import launch

if __name__ == "__main__":
    sys.exit(launch())
