"""The virtual clock: the controller's side (:mod:`.control`) and the racer's (:mod:`.in_racer`)."""
