from __future__ import annotations

import pytest

from dermasynth.jobs.records import TERMINAL_STATES, JobState
from dermasynth.jobs.states import ALLOWED, InvalidTransition, check_transition


def test_final_states_allow_nothing() -> None:
    for state in TERMINAL_STATES:
        for wanted in JobState:
            with pytest.raises(InvalidTransition, match="it is final"):
                check_transition("j", state, wanted)


@pytest.mark.parametrize(
    ("current", "wanted"),
    [
        ("queued", "running"),
        ("queued", "cancelled"),
        ("queued", "failed"),
        ("running", "succeeded"),
        ("running", "failed"),
        ("running", "cancelled"),
        ("running", "queued"),
        ("running", "running"),
    ],
)
def test_allowed_moves(current: str, wanted: str) -> None:
    check_transition("j", JobState(current), JobState(wanted))


def test_refused_move_names_the_job_and_what_is_allowed() -> None:
    with pytest.raises(InvalidTransition) as info:
        check_transition("job-7", JobState.QUEUED, JobState.SUCCEEDED)
    message = str(info.value)
    assert "job-7 is queued" in message and "cannot become succeeded" in message and "running" in message


def test_every_state_has_rules() -> None:
    assert set(ALLOWED) == set(JobState)
