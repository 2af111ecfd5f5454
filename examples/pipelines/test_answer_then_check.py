"""Answer, then check: the model answers, reviews its own answer once, and may revise it."""

from __future__ import annotations

CHECK = ("Question: {question}\nProposed answer: {answer}\n\nCheck the proposed answer. If it is right, repeat it "
         "exactly. If it is wrong, give the right answer instead, in the format the question asks for.")


def test_answer_then_check(ipw_model, power_meter, ipw_query, ipw_record):
    if ipw_record.resumed:
        return
    with power_meter.window():
        first = ipw_model.generate(ipw_query.prompt)
    with power_meter.window():
        checked = ipw_model.generate(CHECK.format(question=ipw_query.prompt, answer=first.text.strip()))
    ipw_record(checked.text, generations=[first, checked])
