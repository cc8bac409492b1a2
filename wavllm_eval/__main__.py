import sys

from wavllm_eval.cli import main

sys.exit(main())
