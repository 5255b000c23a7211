"""python bench/profiled_controller.py PATH ARGS...: the controller (python -m kfault_controller
ARGS) with cProfile switched on by SIGUSR1 and its stats written to PATH by SIGUSR2, so a
profile shows the window the bench measures (experiments being placed), not the controller's
start and kopf's first listing of every pod, which dominate a whole run's profile."""
import cProfile
import signal
import sys

from kfault_controller.__main__ import main


def profile_on_signals(path):
    profile = cProfile.Profile()
    signal.signal(signal.SIGUSR1, lambda *_: profile.enable())

    def write(*_):
        profile.disable()
        profile.dump_stats(path)
    signal.signal(signal.SIGUSR2, write)


if __name__ == "__main__":
    profile_on_signals(sys.argv[1])
    sys.exit(main(sys.argv[2:]))
