"""Expected failures: each becomes one line on stderr and a documented exit code; and the
error texts that several commands share, so that they say the same thing the same way.

Exit codes (also in docs/quickstart.md):
    0  success
    1  the work failed (e.g. non-finite loss, an image that could not be predicted)
    2  usage or input error (bad path, bad file, bad option): fix the command or the input
    75 preempted (SIGTERM/SIGUSR1): a checkpoint was written, rerun with --resume
"""

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_PREEMPTED = 75  # EX_TEMPFAIL from sysexits.h: "try again later", the requeue convention


class AlexnetError(Exception):
    """An expected failure the user can fix; the CLI prints it without a traceback."""

    exit_code = EXIT_FAILED


class InputError(AlexnetError):
    """Bad input: a missing or unreadable path, a file that is not ours, a bad option value."""

    exit_code = EXIT_USAGE


class Preempted(AlexnetError):
    """Training stopped on a signal after writing a checkpoint; rerun with --resume."""

    exit_code = EXIT_PREEMPTED


def no_checkpoint(
    option: str = "CKPT", alternative: str = "--arch torchvision --weights FILE.pth"
) -> InputError:
    """A command that needs weights got none: how to give them (`option`: the command's own)."""
    return InputError(f"no checkpoint: pass {option}, set ALEXNET_CHECKPOINT=CKPT, or use {alternative}")


def no_dataset() -> InputError:
    return InputError("no dataset: pass --data OUT.h5 (written by `alexnet prep`) or set ALEXNET_DATA=OUT.h5")
