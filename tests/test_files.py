"""engine.files: a file exists under its final name only once it is complete."""
import numpy as np
import pytest

from engine import files


def test_a_write_that_fails_leaves_neither_the_file_nor_its_staging_copy(tmp_path):
    target = tmp_path / "result.json"
    with pytest.raises(RuntimeError):
        with files.atomic_write(target) as tmp:
            tmp.write_text('{"half": ')
            assert tmp.parent == tmp_path and tmp.name.startswith(".") and not target.exists()
            raise RuntimeError("killed mid-write")
    assert list(tmp_path.iterdir()) == []


def test_a_finished_write_replaces_the_old_file_in_one_step(tmp_path):
    target = files.write_json(tmp_path / "r.json", {"a": 1})
    with open(target) as reader:   # a reader of the old file keeps all of it
        files.write_json(target, {"a": 2, "b": [1, 2, 3]})
        assert reader.read() == '{"a": 1}'
    assert target.read_text() == '{"a": 2, "b": [1, 2, 3]}'
    arrays = files.save_arrays(tmp_path / "c.npz", np.arange(3), flags=np.ones(2, bool))
    saved = np.load(arrays)
    assert saved["arr_0"].tolist() == [0, 1, 2] and saved["flags"].all()
    assert np.load(files.save_array(tmp_path / "e.npy", np.eye(2))).trace() == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.npz", "e.npy", "r.json"]
