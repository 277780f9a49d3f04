from __future__ import annotations

from bench.shortcuts import ALL, JUDGED_ON, MEASURES, in_turn, shortcuts_env, variants
from core.shortcuts import SHORTCUTS, parse


def test_every_shortcut_of_taskhub_is_judged_and_on_known_measures() -> None:
    assert set(JUDGED_ON) == set(SHORTCUTS)
    assert {measure for measures in JUDGED_ON.values() for measure in measures} <= set(MEASURES)


def test_each_measure_runs_all_shortcuts_and_all_but_each_one_judged_on_it() -> None:
    assert variants("auth") == [ALL, "user_lookup"]
    assert variants("enqueue") == [ALL, "raw_task_sql"]
    assert variants("bulk") == [ALL, "raw_task_sql"]
    assert variants("drain") == [ALL, "raw_task_sql"]


def test_a_variant_turns_off_exactly_its_shortcut() -> None:
    assert parse(shortcuts_env(ALL)["TASKHUB_SHORTCUTS"]) == set(SHORTCUTS)
    for name in SHORTCUTS:
        assert parse(shortcuts_env(name)["TASKHUB_SHORTCUTS"]) == set(SHORTCUTS) - {name}


def test_each_round_starts_with_another_variant_and_runs_them_all() -> None:
    names = [ALL, "one", "another"]
    rounds = [in_turn(names, rep) for rep in range(4)]
    assert [r[0] for r in rounds] == [ALL, "one", "another", ALL]
    assert all(sorted(r) == sorted(names) for r in rounds)
