"""Start a Temporal worker that runs journeys: `python worker.py` is `journeys worker`.

The worker is built in journeys/worker.py, the one place every runner (the CLI, `journeys up`,
simulations, tests and benchmarks) builds it.
"""

from journeys.worker import main

if __name__ == "__main__":
    main()
