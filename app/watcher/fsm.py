"""The job machine, under the seed's name: states and transitions live in `app.domain.fsm`.

The machine is domain knowledge that the API's services and the watcher both use, so it sits in
the domain package; this module keeps `watcher/fsm.py` where readers of the Go design look for it.
"""

from app.domain.fsm import JobMachine, Transition, diagram, restore

__all__ = ["JobMachine", "Transition", "diagram", "restore"]
