"""What a task is: intermediate corpus, downstream data, metric and supervision signal.

    from maskpolicy.tasks.registry import get_task
    task = get_task("synthetic:birthplace")
"""
from .base import BLANK, ClozeQuestion, LabeledText, Passage, Span, Task

__all__ = ["BLANK", "ClozeQuestion", "LabeledText", "Passage", "Span", "Task"]
