"""`python -m wavllm_eval` (what torchrun launches): the same CLI as the `wavllm-eval` script."""

import sys

from wavllm_eval.cli import main

if __name__ == "__main__":  # a worker process importing this module must not run the CLI again
    sys.exit(main())
