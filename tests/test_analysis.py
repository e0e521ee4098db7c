"""Per-cell data flow on IPython's transformed source."""

from __future__ import annotations

import time

import pytest
from cellpipe.analysis import CellSyntaxError, analyse_cell


def flow(src: str, **modules: str):
    return analyse_cell(src, modules or None)


def test_a_read_before_a_write_is_a_read():
    f = flow("y = x + 1")
    assert f.reads == ("x",) and f.writes == {"y"}


def test_a_name_written_first_in_the_cell_is_not_a_read():
    assert "x" not in flow("x = 1\nprint(x)").reads


def test_augmented_assignment_reads_writes_and_mutates():
    f = flow("total += 1")
    assert f.reads == ("total",) and "total" in f.writes and f.mutates == {"total"}


def test_append_on_a_list_is_a_mutation():
    assert flow("items.append(1)").mutates == {"items"}


def test_inplace_true_is_a_mutation_even_for_a_non_mutating_method():
    assert flow("df.drop(columns=['a'], inplace=True)").mutates == {"df"}


def test_a_non_mutating_method_is_only_a_read():
    f = flow("summary = df.describe()")
    assert f.mutates == frozenset() and f.reads == ("df",)


def test_subscript_and_attribute_assignment_mutate_the_root_name():
    assert flow("df['c'] = 1\nmodel.coef_ = 2\ngrid[0][1] = 3").mutates == {"df", "model", "grid"}


def test_fit_mutates_the_model():
    assert "model" in flow("model.fit(X, y)").mutates


def test_methods_on_imported_modules_are_not_mutations():
    assert flow("import numpy as np\nm = np.mean(a)").mutates == frozenset()
    assert flow("m = np.mean(a)", np="numpy").mutates == frozenset()


def test_mutating_an_alias_mutates_the_original():
    assert flow("row = table[0]\nrow.append(1)").mutates == {"row", "table"}


def test_writes_under_if_are_maybe_writes():
    f = flow("if flag:\n    v = 1")
    assert f.maybe_writes == {"v"} and f.writes == frozenset()


def test_a_name_used_after_a_maybe_write_is_still_a_read():
    assert "v" in flow("if flag:\n    v = 1\nprint(v)").reads


def test_with_bodies_are_straight_line():
    assert flow("with open(p) as fh:\n    text = fh.read()").writes == {"fh", "text"}


def test_except_as_name_is_not_a_write():
    f = flow("try:\n    r = 1\nexcept ValueError as err:\n    print(err)")
    assert "err" not in f.writes | f.maybe_writes and "err" not in f.reads


def test_del_removes_a_name_and_needs_it_to_exist():
    f = flow("del tmp")
    assert f.deletes == {"tmp"} and f.reads == ("tmp",)


def test_del_of_an_item_is_a_mutation():
    assert flow("del cache['k']").mutates == {"cache"}


def test_comprehension_variables_are_local():
    f = flow("squares = [i * k for i in range(n)]")
    assert set(f.reads) == {"range", "n", "k"} and "i" not in f.reads


def test_walrus_in_a_comprehension_binds_in_the_cell():
    assert "last" in flow("[last := v for v in values]").maybe_writes


def test_function_bodies_are_read_when_called_not_when_defined():
    f = flow("def score(m):\n    return m.score(X_test, y_test)")
    assert f.reads == () and f.writes == {"score"}
    assert f.functions["score"].reads == {"X_test", "y_test"}


def test_decorators_and_defaults_are_read_at_definition():
    assert set(flow("@cache\ndef f(a=default):\n    return a").reads) == {"cache", "default"}


def test_global_statement_makes_a_function_write_the_global():
    info = flow("def bump():\n    global counter\n    counter = counter + 1").functions["bump"]
    assert info.writes == {"counter"} and "counter" in info.reads


def test_a_function_that_mutates_its_parameter_says_so():
    info = flow("def clean(frame):\n    frame.dropna(inplace=True)").functions["clean"]
    assert info.mutated_params == ("frame",)


def test_a_function_appending_to_a_global_mutates_it():
    assert flow("def log(v):\n    seen.append(v)").functions["log"].mutates == {"seen"}


def test_a_class_body_runs_at_definition_and_methods_are_deferred():
    f = flow("class A(Base):\n    size = default_size\n    def get(self):\n        return registry")
    assert set(f.reads) == {"Base", "default_size"}
    assert f.functions["A"].reads == {"registry"}


def test_calls_record_the_names_passed():
    (call,) = [c for c in flow("clean(df, how=mode)").calls if c.func == "clean"]
    assert call.args == ("df",) and call.kwargs == (("how", "mode"),)


def test_imports_record_their_modules():
    f = flow("import numpy as np\nimport os.path\nfrom pandas import read_csv as rc")
    assert f.imports == {"np": "numpy", "os": "os", "rc": "pandas.read_csv"}


def test_star_imports_are_reported():
    assert flow("from math import *").star_imports == ("math",)


# -- IPython syntax --------------------------------------------------------------------------


def test_time_magic_code_is_analysed():
    f = flow("%time model = train(data)")
    assert f.writes == {"model"} and set(f.reads) == {"train", "data"}


def test_capture_cell_magic_writes_its_variable_and_runs_its_body():
    f = flow("%%capture out\nresult = compute(x)")
    assert f.writes == {"out", "result"} and set(f.reads) == {"compute", "x"}


def test_timeit_reads_but_writes_nothing():
    f = flow("%timeit -n 3 y = f(x)")
    assert f.writes == frozenset() and set(f.reads) == {"f", "x"}


def test_shell_escapes_read_interpolated_names_and_assign_output():
    f = flow("files = !ls {folder}\n!echo $label")
    assert f.writes == {"files"} and set(f.reads) == {"folder", "label"}


def test_matplotlib_and_pip_magics_parse_and_touch_no_names():
    f = flow("%matplotlib inline\n%pip install -q six\n!pip install six")
    assert f.reads == () and f.writes == frozenset()


def test_non_python_cell_magics_are_opaque():
    assert flow("%%bash\necho $HOME {x}").reads == ()


# -- hidden state ----------------------------------------------------------------------------


def test_legacy_numpy_random_reads_and_changes_the_random_state():
    f = flow("a = np.random.rand(3)", np="numpy")
    assert "@random" in f.reads and "@random" in f.mutates


def test_numpys_own_generators_do_not_touch_the_global_state():
    assert "@random" not in flow("rng = np.random.default_rng(0)", np="numpy").reads


def test_from_imported_random_functions_count():
    assert "@random" in flow("from random import shuffle\nshuffle(deck)").mutates
    assert "deck" in flow("from random import shuffle\nshuffle(deck)").mutates


def test_environment_reads_and_writes():
    assert flow("import os\nv = os.environ['HOME']").reads == ("@environ",)
    assert "@environ" in flow("import os\nos.environ['X'] = '1'").mutates
    assert "@environ" in flow("%env X=1").mutates
    assert "@environ" not in flow("%env X").mutates


def test_sys_path_and_cwd_changes():
    assert "@sys.path" in flow("import sys\nsys.path.append('lib')").mutates
    assert "@cwd" in flow("import os\nos.chdir('data')").mutates
    assert "@cwd" in flow("%cd data").mutates


def test_a_syntax_error_names_the_line():
    with pytest.raises(CellSyntaxError) as err:
        flow("x = 1\ny = (")
    assert err.value.line == 2


def test_analysing_200_cells_is_fast():
    cells = [
        f"v{i} = v{i - 1} + {i}\nd{i} = dict(a=v{i})\nd{i}['b'] = [x for x in range(3)]"
        for i in range(200)
    ]
    t0 = time.perf_counter()
    for i, src in enumerate(cells):
        analyse_cell(src + f"\n# {i} {t0}")  # defeat the cache
    assert time.perf_counter() - t0 < 1.0
