"""The architecture document's call table is generated from the code, so it must never drift from it."""

from intercom_dev import diagram


def test_the_documented_call_table_is_the_one_in_the_code():
    text = diagram.DOC.read_text()
    assert diagram.render(text) == text, "docs/architecture.md is out of date: run python -m intercom_dev.diagram"


def test_the_diagram_names_every_state_and_every_row():
    from intercom.core.call import TABLE
    from intercom.core.states import CallState

    text = diagram.DOC.read_text()
    assert all(f" {state.value} " in text for state in CallState)
    for (state, what), row in TABLE.items():
        assert f"| {state.value} | {what.value} |" in text
