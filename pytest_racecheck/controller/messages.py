"""The controller's answers to its racers' messages, one method per kind (``racer_<kind>``),
and the virtual clock's glue: sleeps, wake-ups, jumps.
"""

from __future__ import annotations

from collections.abc import Sequence

from pytest_racecheck.clock.control import SLEEP_POINT, format_duration
from pytest_racecheck.controller.blocking import notify_event
from pytest_racecheck.controller.crew import ControllerState, Racer
from pytest_racecheck.controller.errors import (
    RaceError,
    RacerDied,
    RacerSetupFailed,
    describe_exit,
)
from pytest_racecheck.wire.messages import (
    At,
    BackendPid,
    Connecting,
    Message,
    Pass,
    Ready,
    Result,
    SetupError,
    Sleep,
    Wake,
    Warm,
    is_message,
)


class RacerMessages(ControllerState):
    """Receives, reads and acts on what racers send; lets held racers pass."""

    def _dispatch(self, racer: Racer, message: Message) -> None:
        handler = getattr(self, f"racer_{message.kind}", None)
        if handler is None:
            doing = self.round.doing if self.round is not None else self._expected
            raise RaceError(f"{racer.describe()} sent {message!r:.200} while {doing}", self.result)
        handler(racer, message)

    def racer_backend_pid(self, racer: Racer, message: BackendPid) -> None:
        racer.backend_pids.add(message.pid)
        racer.connecting = False

    def racer_connecting(self, racer: Racer, message: Connecting) -> None:
        racer.connecting = True

    def racer_at(self, racer: Racer, message: At) -> None:
        if self.round is None:
            raise RaceError(
                f"{racer.describe()} held at {message.name!r} outside a round", self.result
            )
        racer.at_point, racer.connecting = message.name, False
        self.round.blocked_now.discard(racer.index)
        notify_event(self.probe)
        if message.after_start is not None:
            self.coordinator.started(racer.index, message.after_start)
        if message.start:
            self._pass(self.coordinator.arrived_at_start(racer.index))
            return
        self._pass(self.coordinator.arrived(racer.index, message.name, message.statement))

    def racer_result(self, racer: Racer, message: Result) -> None:
        state = self.round
        if state is None or message.round != state.number:
            raise RaceError(
                f"{racer.describe()} sent a result for round {message.round} in "
                f"{state.doing if state else self._expected}",
                self.result,
            )
        state.outcomes[racer.index] = message.outcome
        if message.after_start is not None:
            self.coordinator.started(racer.index, message.after_start)
        state.blocked_now.discard(racer.index)
        racer.finished, racer.at_point, racer.connecting = True, None, False
        notify_event(self.probe)
        self._pass(self.coordinator.finished(racer.index))

    def racer_sleep(self, racer: Racer, message: Sleep) -> None:
        """A virtual sleep: held at the point ``sleep`` when the race holds it, else asleep
        until the clock reaches its wake-up."""
        if self.clock is None or self.round is None:
            raise RaceError(f"{racer.describe()} slept on a virtual clock it was not given")
        self.clock.sleep(racer.index, message.seconds, message.held)
        racer.connecting = False
        notify_event(self.probe)
        if message.held:
            racer.at_point = SLEEP_POINT
            self._pass(self.coordinator.arrived(racer.index, SLEEP_POINT))

    def _asleep(self, racer: Racer) -> bool:
        return self.clock is not None and self.clock.asleep(racer.index)

    def _jump_if_all_wait(self, blocked: set[int]) -> None:
        """When every racer waits (asleep, held at a point, blocked) and one sleeps, the clock
        jumps to the earliest wake-up (Trio's MockClock autojump)."""
        clock = self.clock
        if clock is None or not clock.sleepers:
            return
        for racer in self.racers:
            if not (
                racer.finished
                or racer.at_point is not None
                or clock.asleep(racer.index)
                or racer.index in blocked
            ):
                return
        self._wake(clock.jump())

    def _wake(self, indexes: Sequence[int]) -> None:
        for i in indexes:
            self.racers[i].channel.send(Wake())
        if indexes:
            notify_event(self.probe)

    def _clock_step(self, seconds: float) -> None:
        """A schedule's clock step (``"+31m"``)."""
        assert self.clock is not None
        self.clock.advance(seconds, f"the schedule moves the clock {format_duration(seconds)}")
        self._wake(self.clock.due())

    def racer_setup_error(self, racer: Racer, message: SetupError) -> None:
        error = message.error
        what = "run racer_setup for" if message.doing == "set up" else "load"
        raise RacerSetupFailed(
            f"{racer.describe()} could not {what} {self.spec.fn_name}: {error}\n{error.traceback}",
            self.result,
        )

    def racer_ready(self, racer: Racer, message: Ready) -> None:
        self._arrived_for("ready", racer)

    def racer_warm(self, racer: Racer, message: Warm) -> None:
        self._arrived_for("warm", racer)

    def _arrived_for(self, kind: str, racer: Racer) -> None:
        if self._expected != kind:
            raise RaceError(
                f"{racer.describe()} sent {kind!r} while {self._expected or 'racing'}",
                self.result,
            )
        self._awaiting.discard(racer.index)

    def _receive(self, racer: Racer, doing: str) -> Message:
        """One message from a racer; a racer that died or sent garbage ends the race."""
        self.progress.moved()
        try:
            message = racer.channel.recv()
        except (EOFError, OSError):
            racer.process.join(1.0)
            raise RacerDied(
                f"{racer.describe()} {describe_exit(racer.process.exitcode)} while {doing}",
                self.result,
            ) from None
        except Exception as exc:
            raise RaceError(
                f"{racer.describe()} sent a message that cannot be read while {doing}: "
                f"{type(exc).__name__}: {exc}",
                self.result,
            ) from exc
        if not is_message(message):
            raise RaceError(
                f"{racer.describe()} sent garbage while {doing}: {message!r:.200}", self.result
            )
        return message

    def _pass(self, indexes: Sequence[int]) -> None:
        for i in indexes:
            racer = self.racers[i]
            if racer.at_point is None:
                continue
            if racer.at_point == SLEEP_POINT and self.clock is not None and i in self.clock.held:
                # a held sleep: letting it go moves the clock to its wake-up
                self.clock.wake_held(i)
                racer.at_point = None
                self._wake([i, *self.clock.due()])
                continue
            racer.channel.send(Pass(racer.at_point))
            racer.at_point = None
