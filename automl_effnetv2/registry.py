"""Names a user can choose, and the one error a wrong name gets.

Datasets, model variants, optimizers, augmentations, config keys: wherever a
user-given name selects something, a wrong name is reported the same way,
with the closest valid names first and then all of them:

  unknown optimizer 'rmsprp'; did you mean rmsprop? (valid: rmsprop, sgd, ...)

`check_name` and `lookup` serve tuples and dicts of choices; `Registry` is
a table filled by a class decorator (the dataset training configs).
"""
import difflib
from typing import Any, Dict, Iterable, List, Optional, Type


def unknown_name_message(kind: str, name: Any, valid: Iterable[Any]) -> str:
  """`unknown <kind> <name>; did you mean ...? (valid: ...)`.

  `valid` is listed in the order given; the suggestions are the up to three
  valid names most similar to `name`, ignoring case (difflib's ratio of at
  least 0.6).
  """
  valid = [str(v) for v in valid]
  by_lower = {v.lower(): v for v in valid}  # Case never hides a match.
  close = [by_lower[c] for c in difflib.get_close_matches(
      str(name).lower(), list(by_lower), n=3, cutoff=0.6)]
  hint = f'; did you mean {", ".join(close)}?' if close else ''
  return f'unknown {kind} {name!r}{hint} (valid: {", ".join(valid)})'


def check_name(kind: str, name: Any, valid: Iterable[Any],
               error: Type[Exception] = ValueError) -> Any:
  """Returns `name` if it is one of `valid`; raises `error` otherwise."""
  valid = list(valid)
  if name not in valid:
    raise error(unknown_name_message(kind, name, valid))
  return name


def lookup(kind: str, name: Any, table: Dict[Any, Any],
           error: Type[Exception] = ValueError) -> Any:
  """`table[name]`; a missing name raises `error` with the closest keys."""
  return table[check_name(kind, name, table, error)]


class Registry:
  """Objects by name, added with a decorator; names ignore case.

    configs = Registry('dataset config')

    @configs.register                    # as 'cifar10ft'
    class Cifar10Ft: ...

    @configs.register(name='fashion_mnist')
    class FashionMNIST: ...
  """

  def __init__(self, kind: str, error: Type[Exception] = ValueError):
    self.kind = kind
    self.error = error
    self._objects: Dict[str, Any] = {}

  def register(self, obj=None, *, name: Optional[str] = None) -> Any:
    """Adds `obj` under its lower-cased `__name__` (or `name`)."""
    if obj is None:
      return lambda o: self.register(o, name=name)
    self._objects[(name or obj.__name__).lower()] = obj
    return obj

  def names(self) -> List[str]:
    return sorted(self._objects)

  def get(self, name: str) -> Any:
    key = name.lower()
    if key not in self._objects:
      raise self.error(unknown_name_message(self.kind, name, self.names()))
    return self._objects[key]

