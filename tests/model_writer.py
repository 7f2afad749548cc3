"""A writer process for the save fault tests: saves two models in turn to one path until killed.

    python tests/model_writer.py MODEL_A MODEL_B TARGET

Loads both models once (the slow imports happen once), prints "loaded", then answers commands
read from stdin, one per line; each forks a writer child that saves B, A, B, ... to TARGET:

    count      the child saves once and exits; prints "events N": file-system steps of one save
    kill K     the child SIGKILLs itself at its K-th file-system step (Python audit events fire
               just before the step runs); prints "killed K" once it is dead
    race       the child saves A, then loads TARGET while saving B from inside the load (just before
               the load opens labels.json); prints "loaded CLASS" or "error MESSAGE"
    run        the child saves until killed, printing "ready" after its first complete save;
               prints "pid P" first, and "killed" once the test has killed P
"""

from __future__ import annotations

import os
import signal
import sys

import torch

import textcnn

# The file-system steps of a save, as Python audit events (renameat2 through ctypes raises none,
# but the steps on each side of it do).
STEPS = {"open", "os.mkdir", "os.rename", "os.replace", "os.remove", "os.rmdir", "shutil.rmtree",
         "os.scandir", "fcntl.flock", "ctypes.dlsym"}


def say(line: str) -> None:
    os.write(1, (line + "\n").encode())  # unbuffered: parent and children share the pipe


def save_forever(models, target: str, on_saved=lambda: None) -> None:
    i = 0
    while True:
        models[i % 2].save(target)
        on_saved()
        i += 1


def child(command: str, arg: int, models, target: str) -> None:
    steps = [0]

    def hook(event, _args):
        if event in STEPS:
            steps[0] += 1
            if command == "kill" and steps[0] == arg:
                os.kill(os.getpid(), signal.SIGKILL)

    if command == "race":
        race(models, target)
    elif command == "count":
        sys.addaudithook(hook)
        models[0].save(target)
        say(f"events {steps[0]}")
    elif command == "kill":
        sys.addaudithook(hook)
        save_forever(models, target)
    else:
        first = [True]

        def ready():
            if first[0]:
                say("ready")
                first[0] = False

        save_forever(models, target, ready)


def race(models, target: str) -> None:
    """A save that replaces (and deletes) the version a load is in the middle of reading."""
    models[1].save(target)
    armed = [True]

    def hook(event, args):
        if armed[0] and event == "open" and args[0] == "labels.json":
            armed[0] = False
            models[0].save(target)

    sys.addaudithook(hook)
    try:
        say(f"loaded {textcnn.load(target).classes_[0]}")
    except textcnn.ModelFormatError as e:
        say(f"error {e}")


def main() -> None:
    torch.set_num_threads(1)  # no thread pool in the parent: forking stays safe
    a_dir, b_dir, target = sys.argv[1:4]
    models = (textcnn.load(b_dir), textcnn.load(a_dir))  # B first: the target starts as A
    say("loaded")
    for line in sys.stdin:
        command, *rest = line.split()
        arg = int(rest[0]) if rest else 0
        pid = os.fork()
        if pid == 0:
            try:
                child(command, arg, models, target)
            finally:
                os._exit(0)
        if command == "run":
            say(f"pid {pid}")
        _, status = os.waitpid(pid, 0)
        killed = os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
        if command != "count":
            say(("killed" if killed else "exited") + (f" {arg}" if command == "kill" else ""))


if __name__ == "__main__":
    main()
