"""The autoscale formula subset: fixed targets, optionally via max/min of constants.

    $TargetDedicatedNodes = 2;
    $TargetLowPriorityNodes = max(0, min(4, 10));
    $NodeDeallocationOption = taskcompletion;

Any other statement is rejected with Azure's AutoScalingFormulaSyntaxError (400).
"""
from __future__ import annotations

import re

from local_stack.batch_service.errors import BatchServiceError

_ASSIGN = re.compile(r"^\s*\$(\w+)\s*=\s*(.+?)\s*$", re.S)
_NUMBER = re.compile(r"^\d+$")
_CALL = re.compile(r"^(max|min)\s*\((.*)\)$", re.S)
_DEALLOCATION = {"requeue", "terminate", "taskcompletion", "retaineddata"}


def _invalid(formula: str, reason: str) -> BatchServiceError:
    return BatchServiceError(
        400,
        "AutoScalingFormulaSyntaxError",
        "The specified autoscale formula is not valid (this local service supports fixed targets, max() and min()).",
        {"Formula": formula, "Reason": reason},
    )


def _split_args(text: str) -> list[str]:
    args, depth, current = [], 0, ""
    for ch in text:
        if ch == "," and depth == 0:
            args.append(current)
            current = ""
            continue
        depth += ch == "("
        depth -= ch == ")"
        current += ch
    args.append(current)
    return [a.strip() for a in args]


def _value(expr: str, formula: str) -> int:
    expr = expr.strip()
    if _NUMBER.match(expr):
        return int(expr)
    call = _CALL.match(expr)
    if call:
        values = [_value(arg, formula) for arg in _split_args(call.group(2))]
        if not values:
            raise _invalid(formula, f"{call.group(1)}() needs arguments")
        return max(values) if call.group(1) == "max" else min(values)
    raise _invalid(formula, f"unsupported expression '{expr}' (this service supports constants, max() and min())")


def evaluate(formula: str) -> dict[str, int | str]:
    """The variables a formula sets: TargetDedicatedNodes, TargetLowPriorityNodes, NodeDeallocationOption."""
    if not formula or not formula.strip():
        raise _invalid(formula or "", "the formula is empty")
    # Azure reports all three, with $NodeDeallocationOption=requeue when the formula does not set it
    # (the SDK suite's test_batch_scale_pools, recorded against a real account)
    result: dict[str, int | str] = {"TargetDedicatedNodes": 0, "TargetLowPriorityNodes": 0, "NodeDeallocationOption": "requeue"}
    statements = [s for s in formula.split(";") if s.strip()]
    for statement in statements:
        match = _ASSIGN.match(statement)
        if not match:
            raise _invalid(formula, f"'{statement.strip()}' is not an assignment")
        name, expr = match.groups()
        if name == "NodeDeallocationOption":
            if expr.strip() not in _DEALLOCATION:
                raise _invalid(formula, f"unknown deallocation option '{expr.strip()}'")
            result[name] = expr.strip()
        elif name in ("TargetDedicatedNodes", "TargetLowPriorityNodes"):
            result[name] = _value(expr, formula)
        else:
            raise _invalid(formula, f"unsupported variable ${name}")
    return result


def results_text(values: dict[str, int | str]) -> str:
    """The `autoScaleRun.results` string: `$Name=value;...`."""
    return ";".join(f"${k}={v}" for k, v in values.items())
