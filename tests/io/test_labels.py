import numpy as np
import pytest

from evpipe.errors import FormatError
from evpipe.io.labels import BOX_DTYPE, GESTURE_DTYPE, read_gen1_boxes, read_gesture_labels

# formats.md §1.5
GEN1_V1 = np.dtype([("ts", "<u8"), ("x", "<f4"), ("y", "<f4"), ("w", "<f4"), ("h", "<f4"),
                    ("class_id", "u1"), ("confidence", "<f4"), ("track_id", "<u4")])
GEN1_V2 = np.dtype({"names": ["t", "x", "y", "w", "h", "class_id", "track_id", "class_confidence"],
                    "formats": ["<i8", "<f4", "<f4", "<f4", "<f4", "<u4", "<u4", "<f4"],
                    "offsets": [0, 8, 12, 16, 20, 24, 28, 32], "itemsize": 40})
ROWS = [  # t, x, y, w, h, class_id, confidence, track_id
    (0, 1.5, 2.0, 30.0, 20.0, 1, 0.5, 7),
    (59749999, 118.0, 96.0, 43.0, 39.0, 0, 1.0, 2753),  # the row quoted in formats.md §1.5
    (59749999, -4.25, 230.5, 310.0, 12.0, 1, 0.875, 2**32 - 1),
]


def boxes(dtype) -> np.ndarray:
    arr = np.zeros(len(ROWS), dtype)
    for i, (t, x, y, w, h, c, conf, track) in enumerate(ROWS):
        arr[i]["ts" if "ts" in dtype.names else "t"] = t
        arr[i]["confidence" if "confidence" in dtype.names else "class_confidence"] = conf
        for name, v in zip(("x", "y", "w", "h", "class_id", "track_id"), (x, y, w, h, c, track),
                           strict=True):
            arr[i][name] = v
    return arr


def test_gen1_both_dtypes_read_equal(tmp_path):
    np.save(tmp_path / "v1_bbox.npy", boxes(GEN1_V1))
    np.save(tmp_path / "v2_bbox.npy", boxes(GEN1_V2))
    v1 = read_gen1_boxes(tmp_path / "v1_bbox.npy")
    v2 = read_gen1_boxes(tmp_path / "v2_bbox.npy")
    assert v1.dtype == v2.dtype == BOX_DTYPE
    np.testing.assert_array_equal(v1, v2)
    assert v1["t"].tolist() == [0, 59749999, 59749999]
    assert v1["class_id"].tolist() == [1, 0, 1] and v1["track_id"][2] == 2**32 - 1
    np.testing.assert_array_equal(v1["class_confidence"], np.float32([0.5, 1.0, 0.875]))
    np.testing.assert_array_equal(v1["x"], np.float32([1.5, 118.0, -4.25]))


def test_gen1_empty_and_field_order_free(tmp_path):
    np.save(tmp_path / "e.npy", np.zeros(0, GEN1_V1))
    empty = read_gen1_boxes(tmp_path / "e.npy")
    assert empty.dtype == BOX_DTYPE and empty.shape == (0,)
    shuffled = np.dtype([(n, GEN1_V2[n]) for n in reversed(GEN1_V2.names)])
    np.save(tmp_path / "r.npy", boxes(shuffled))
    np.save(tmp_path / "v2.npy", boxes(GEN1_V2))
    np.testing.assert_array_equal(read_gen1_boxes(tmp_path / "r.npy"),
                                  read_gen1_boxes(tmp_path / "v2.npy"))


def test_gen1_bad_files(tmp_path):
    path = tmp_path / "bad.npy"
    np.save(path, np.array([{"t": 1}, None], dtype=object), allow_pickle=True)
    with pytest.raises(FormatError, match="not a readable .npy"):
        read_gen1_boxes(path)
    np.save(path, np.zeros((2, 3), np.float32))
    with pytest.raises(FormatError, match="structured array"):
        read_gen1_boxes(path)
    np.save(path, np.zeros((2, 2), GEN1_V2))
    with pytest.raises(FormatError, match="1-D"):
        read_gen1_boxes(path)
    missing = np.dtype([(n, GEN1_V1[n]) for n in GEN1_V1.names if n != "track_id"])
    np.save(path, np.zeros(2, missing))
    with pytest.raises(FormatError, match="'track_id'"):
        read_gen1_boxes(path)
    both = np.dtype(GEN1_V1.descr + [("t", "<i8")])
    np.save(path, np.zeros(2, both))
    with pytest.raises(FormatError, match="exactly one of \\('t', 'ts'\\)"):
        read_gen1_boxes(path)
    text = np.dtype([(n, "U4" if n == "x" else GEN1_V2[n]) for n in GEN1_V2.names])
    np.save(path, np.zeros(2, text))
    with pytest.raises(FormatError, match="'x' has dtype <U4"):
        read_gen1_boxes(path)
    huge = boxes(GEN1_V1)
    huge["ts"][2] = 2**63
    np.save(path, huge)
    with pytest.raises(FormatError, match="box 2: ts") as e:
        read_gen1_boxes(path)
    assert e.value.offset == path.stat().st_size - GEN1_V1.itemsize
    np.savez(tmp_path / "a.npz", boxes=boxes(GEN1_V2))
    with pytest.raises(FormatError, match="npz"):
        read_gen1_boxes(tmp_path / "a.npz")
    with pytest.raises(FormatError, match="file not found"):
        read_gen1_boxes(tmp_path / "none.npy")


def test_gen1_truncated_and_hostile_header(tmp_path):
    path = tmp_path / "t.npy"
    np.save(path, boxes(GEN1_V2))
    data = path.read_bytes()
    for cut in (0, 5, 60, len(data) - 1):
        path.write_bytes(data[:cut])
        with pytest.raises(FormatError):
            read_gen1_boxes(path)
    # A header claiming 10^12 boxes is refused without allocating them.
    header = np.lib.format.header_data_from_array_1_0(boxes(GEN1_V2))
    header["shape"] = (10**12,)
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, header)
        f.write(data[-GEN1_V2.itemsize:])
    with pytest.raises(FormatError, match="not a readable .npy"):
        read_gen1_boxes(path)


GESTURE = "aedat31/user01_natural_labels.csv"


def test_gesture_sample(data_dir):
    lab = read_gesture_labels(data_dir / GESTURE)
    assert lab.dtype == GESTURE_DTYPE and len(lab) == 12
    cls = lab["class"].tolist()
    assert sorted(set(cls)) == list(range(1, 12)) and cls.count(8) == 2
    assert cls.index(5) < cls.index(4)  # file order, not class order
    assert lab["start_us"].min() == 53036986 and lab["end_us"].max() == 177991967
    assert (lab["end_us"] >= lab["start_us"]).all()
    assert lab[-1].tolist() == (11, 171367247, 177991967)


def test_gesture_crlf_bom_and_blank_lines(tmp_path):
    path = tmp_path / "l.csv"
    path.write_bytes(b"\xef\xbb\xbfclass,startTime_usec,endTime_usec\r\n3, 10, 20\r\n\r\n1,5,5\r\n")
    assert read_gesture_labels(path).tolist() == [(3, 10, 20), (1, 5, 5)]
    path.write_bytes(b"class,startTime_usec,endTime_usec\n")
    assert read_gesture_labels(path).shape == (0,)


@pytest.mark.parametrize("body,message,line", [
    (b"1,2\n", "2 fields, expected 3", 2),
    (b"1,2,3,4\n", "4 fields", 2),
    (b"1,2,3\n1,x,3\n", "non-integer", 3),
    (b"1,2.5,3\n", "non-integer", 2),
    (b"1,2_0,30\n", "non-integer", 2),
    (b"1,30,20\n", "end 20 us is before start 30 us", 2),
    (b"0,1,2\n", "class 0 is not a 1-based", 2),
    (b"1,1,99999999999999999999\n", "time out of the int64 range", 2),
])
def test_gesture_malformed_rows(tmp_path, body, message, line):
    head = b"class,startTime_usec,endTime_usec\n"
    path = tmp_path / "l.csv"
    path.write_bytes(head + body)
    with pytest.raises(FormatError, match=f"line {line}: {message}") as e:
        read_gesture_labels(path)
    assert e.value.path == str(path)
    lines = (head + body).split(b"\n")
    assert e.value.offset == sum(len(s) + 1 for s in lines[:line - 1])


def test_gesture_bad_files(tmp_path):
    path = tmp_path / "l.csv"
    path.write_bytes(b"")
    with pytest.raises(FormatError, match="empty file"):
        read_gesture_labels(path)
    path.write_bytes(b"label,start,end\n1,2,3\n")
    with pytest.raises(FormatError, match="line 1: header"):
        read_gesture_labels(path)
    path.write_bytes(b"\x00\xff" * 100)
    with pytest.raises(FormatError):
        read_gesture_labels(path)
    with pytest.raises(FormatError, match="file not found"):
        read_gesture_labels(tmp_path / "none.csv")
