"""``python -m hkube_runtime``: run the algorithm named by ALGORITHM_ENTRY_POINT."""

import sys

from .runner import run_from_env


def main():
    sys.exit(run_from_env())


if __name__ == "__main__":
    main()
