"""Run the >>> examples of methods of re-exported classes.

pytest's doctest collection skips them: an exported class carries ``__module__`` of its
public module (``safeserve``, ``safeserve.metrics``...), so the finder treats its methods as
foreign in the private module that defines them and vice versa.
"""

from __future__ import annotations

import doctest
import importlib
import inspect
import pkgutil
from collections.abc import Iterator

import pytest

import safeserve


def _method_doctests() -> Iterator[doctest.DocTest]:
    finder = doctest.DocTestFinder(recurse=False)
    seen: set[int] = set()
    for info in pkgutil.walk_packages(safeserve.__path__, "safeserve."):
        module = importlib.import_module(info.name)
        for obj in list(vars(module).values()):
            if not inspect.isclass(obj) or obj.__module__ == module.__name__ or id(obj) in seen:
                continue
            members = vars(obj)
            defined_here = [
                m for m in members.values() if getattr(m, "__module__", None) == module.__name__
            ]
            if not defined_here:
                continue  # imported from elsewhere
            seen.add(id(obj))
            for attr, member in members.items():
                target = member.fget if isinstance(member, property) else member
                target = getattr(target, "__func__", target)  # classmethod / staticmethod
                if not inspect.isfunction(target) or not target.__doc__:
                    continue
                name = f"{module.__name__}.{obj.__name__}.{attr}"
                yield from finder.find(target, name, module=False, globs=dict(vars(module)))


TESTS = [t for t in _method_doctests() if t.examples]


def test_some_method_examples_exist() -> None:
    """The collector finds the method examples (so the test below cannot pass vacuously)."""
    assert len(TESTS) >= 5


@pytest.mark.parametrize("test", TESTS, ids=lambda t: t.name)
def test_method_example(test: doctest.DocTest) -> None:
    """One method's >>> example runs and prints what its docstring says."""
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    report: list[str] = []
    runner.run(test, out=report.append)
    assert runner.failures == 0, "".join(report)
