"""The library's module-level imports form no cycle and reach no underscored name of
another module (docs/ARCHITECTURE.md, "Layers")."""

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGES = ("metaopt", "tasks")


def _modules():
  for package in PACKAGES:
    for path in (ROOT / package).rglob("*.py"):
      parts = path.relative_to(ROOT).with_suffix("").parts
      name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
      yield name, path


def _top_level_imports(path):
  """(module, imported names) of the imports at module level (not inside functions)."""
  for node in ast.parse(path.read_text()).body:
    if isinstance(node, ast.Import):
      for alias in node.names:
        yield alias.name, ()
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      yield node.module, tuple(a.name for a in node.names)


def _graph():
  modules = dict(_modules())
  graph = {}
  for name, path in modules.items():
    deps = set()
    for module, names in _top_level_imports(path):
      if module.split(".")[0] not in PACKAGES:
        continue
      for imported in names:  # `from pkg import sub` imports the submodule sub.
        if f"{module}.{imported}" in modules:
          deps.add(f"{module}.{imported}")
      if module in modules:
        deps.add(module)
    graph[name] = deps - {name}
  return graph


def _find_cycle(graph):
  state, stack = {}, []

  def visit(node):
    state[node] = "open"
    stack.append(node)
    for dep in sorted(graph.get(node, ())):
      if state.get(dep) == "open":
        return stack[stack.index(dep):] + [dep]
      if dep not in state:
        found = visit(dep)
        if found:
          return found
    state[node] = "done"
    stack.pop()
    return None

  for node in sorted(graph):
    if node not in state:
      found = visit(node)
      if found:
        return found
  return None


def test_no_import_cycle():
  graph = _graph()
  # A package __init__ re-exporting its submodules is not a dependency of those
  # submodules on the package: drop child -> parent-package edges.
  for name, deps in graph.items():
    graph[name] = {d for d in deps if not name.startswith(d + ".")}
  assert _find_cycle(graph) is None, " -> ".join(_find_cycle(graph))


def test_no_underscored_names_imported_across_modules():
  bad = []
  for name, path in _modules():
    for module, names in _top_level_imports(path):
      if module.split(".")[0] in PACKAGES:
        bad += [f"{name} imports {module}.{n}" for n in names
                if n.startswith("_") and n != "__version__"]
  # Registration imports (`from pkg import module as _module`) alias, they do not
  # reach a private name; only the imported name itself counts.
  assert not bad, bad


def test_the_cycle_finder_finds_a_cycle():
  assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
  assert _find_cycle({"a": {"b"}, "b": set()}) is None


#: Packages of the extras ([meta], [data], [leaderboard], [wandb]): the core install
#: (``pip install metaopt-jax``: jax, optax, numpy, safetensors) has none of them.
OPTIONAL = ("haiku", "tensorflow_datasets", "tensorflow", "wandb", "orbax", "sklearn",
            "matplotlib", "tqdm", "mnist1d", "array_record")
#: What ``metaopt.load`` and ``metaopt.safeguard`` import.
CORE_ENTRY = ("metaopt", "metaopt.lopt.io", "metaopt.safeguard")


def test_the_core_path_imports_no_extra_at_module_level():
  """Every module that ``import metaopt; metaopt.load(...)`` reaches (its module-level
  imports, transitively, parent packages included) imports no extra's package at
  module level (tests/test_wheel.py checks the same in a clean install)."""
  graph, modules = _graph(), dict(_modules())
  reached, todo = set(), list(CORE_ENTRY)
  while todo:
    name = todo.pop()
    if name in reached or name not in modules:
      continue
    reached.add(name)
    parts = name.split(".")
    todo += [".".join(parts[:i]) for i in range(1, len(parts))]  # parent __init__s
    todo += sorted(graph.get(name, ()))
  bad = [f"{name} imports {module}" for name in sorted(reached)
         for module, _ in _top_level_imports(modules[name])
         if module.split(".")[0] in OPTIONAL]
  assert not bad, bad
  assert {"metaopt.lopt.io", "metaopt.lopt.general", "tasks.haiku_tasks"} <= reached
