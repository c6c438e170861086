#!/usr/bin/env python3
"""Lists the public objects of the memcnn package that have no docstring; exits 1 if there are any.

The public API, as the API reference documents it (Sphinx autodoc):

- every module of the package whose dotted name has no part starting with an underscore
  (memcnn, memcnn.layers, memcnn.models.resnet, memcnn.experiment.factory, ...);
- in each, the public classes and functions it defines (``__module__`` is the module) or that it
  takes from the C++ extension memcnn._C, and every name in its ``__all__``;
- in each such class, the public methods, properties, class methods and static methods it
  defines or inherits from memcnn's own (possibly private) base classes; those inherited from
  torch (torch.nn.Module's) are PyTorch's to document.

A docstring counts when it holds text. A pybind11 class or function without a ``doc`` argument
has none (pybind11's generated signature line alone is not counted).

    PYTHONPATH=build/python/site /usr/bin/python3 python/tools/check_docstrings.py [-v]

-v prints every object checked. Output: one line per object without a docstring, then a count.
"""

import argparse
import importlib
import inspect
import pkgutil
import re
import sys


def public(name):
    return not name.startswith('_')


def module_names(package):
    """The dotted names of the package and its public submodules, in import order."""
    names = [package.__name__]
    for info in pkgutil.walk_packages(package.__path__, prefix=package.__name__ + '.'):
        if all(public(part) for part in info.name.split('.')[1:]):
            names.append(info.name)
    return names


# pybind11 puts "name(self: memcnn._C.X, ...) -> ..." lines first in a bound function's __doc__
# (one per overload, with "Overloaded function." and numbered lines); what follows is the doc.
_SIGNATURE = re.compile(r'^\s*(\d+\.\s*)?[\w.]+\(.*\)(\s*->\s*.*)?$')


def has_docstring(obj, binding=False):
    doc = getattr(obj, '__doc__', None)
    if not isinstance(doc, str):
        return False
    if (binding or is_binding(obj)) and not inspect.isclass(obj):
        lines = [line for line in doc.splitlines() if line.strip()]
        lines = [line for line in lines if not _SIGNATURE.match(line) and line.strip() != 'Overloaded function.']
        return bool(lines)
    return bool(doc.strip())


def is_binding(obj):
    return (getattr(obj, '__module__', None) or '').startswith('memcnn._C')


def class_members(cls):
    """(owner class, name, member) of the public methods and properties of cls that cls or one of
    memcnn's classes among its bases defines (the nearest definition of each name)."""
    found = set()
    for owner in cls.__mro__:
        if not (getattr(owner, '__module__', None) or '').startswith('memcnn'):
            continue
        for name, raw in vars(owner).items():
            if not public(name) or name in found:
                continue
            if isinstance(raw, (staticmethod, classmethod)):
                member = raw.__func__
            elif isinstance(raw, property) or inspect.isfunction(raw) or inspect.isroutine(raw):
                member = raw
            else:
                continue
            found.add(name)
            yield owner, name, member


def api_objects(module):
    """(qualified name, object) of the module's public classes and functions."""
    exported = set(getattr(module, '__all__', []))
    for name, obj in sorted(vars(module).items()):
        if not (inspect.isclass(obj) or inspect.isroutine(obj)):
            continue
        if name in exported or (public(name) and (getattr(obj, '__module__', None) == module.__name__
                                                    or is_binding(obj))):
            yield f'{module.__name__}.{name}', obj


def missing_docstrings(verbose=False):
    import memcnn
    missing, seen, seen_members = [], set(), set()

    def check(qualified, obj, binding=False):
        if verbose:
            print(f'checked {qualified}')
        if not has_docstring(obj, binding):
            missing.append(qualified)

    for module_name in module_names(memcnn):
        module = importlib.import_module(module_name)
        check(module_name, module)
        for qualified, obj in api_objects(module):
            if id(obj) in seen:  # re-exported: checked where first found
                continue
            seen.add(id(obj))
            check(qualified, obj)
            if inspect.isclass(obj):
                for owner, name, member in class_members(obj):
                    if (id(owner), name) in seen_members:  # inherited: reported once, where first seen
                        continue
                    seen_members.add((id(owner), name))
                    check(f'{qualified}.{name}', member, is_binding(owner))
    return missing


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('-v', '--verbose', action='store_true', help='print every object checked')
    args = parser.parse_args()
    missing = missing_docstrings(args.verbose)
    for name in missing:
        print(f'no docstring: {name}')
    print(f'{len(missing)} public object(s) of memcnn without a docstring')
    return 1 if missing else 0


if __name__ == '__main__':
    sys.exit(main())
