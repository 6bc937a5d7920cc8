"""The input pipeline: exact, disjoint shares of every epoch across ranks; batches read from
the HDF5 shards in workers, identical whatever the worker count."""

from __future__ import annotations

from contextlib import closing

import numpy as np
import pytest
import torch

from alexnet_cli.data import augment, loader
from alexnet_cli.data.format.index import PreparedDataset
from tests.conftest import CpuJpegs, make_dataset


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return PreparedDataset(make_dataset(tmp_path_factory.mktemp("loader"), classes=3, train_per_class=5, val_per_class=3))


@pytest.mark.parametrize("n,batch,world", [(10, 4, 1), (10, 4, 3), (13, 4, 2), (5, 8, 4), (7, 2, 7)])
def test_every_image_once_per_epoch_across_ranks_with_equal_step_counts(n, batch, world):
    indices = np.arange(100, 100 + n)
    per_rank = [loader.epoch_batches(indices, batch, seed=1, epoch=2, rank=r, world_size=world) for r in range(world)]
    assert len({len(b) for b in per_rank}) == 1  # same number of steps on every rank
    seen = np.concatenate([b.indices for batches in per_rank for b in batches])
    assert sorted(seen.tolist()) == indices.tolist()  # each image exactly once, no padding
    for step in range(len(per_rank[0])):
        shares = [per_rank[r][step] for r in range(world)]
        assert len({s.global_size for s in shares}) == 1
        assert sum(len(s.indices) for s in shares) == shares[0].global_size


def test_epoch_order_depends_on_seed_and_epoch_only():
    idx = np.arange(50)
    a = loader.epoch_order(idx, 0, 1)
    assert np.array_equal(a, loader.epoch_order(idx, 0, 1))
    assert sorted(a.tolist()) == idx.tolist()
    assert not np.array_equal(a, loader.epoch_order(idx, 0, 2))
    assert not np.array_equal(a, loader.epoch_order(idx, 1, 1))


def test_global_batches_are_the_same_whatever_the_world_size():
    idx = np.arange(23)
    single = [b.indices.tolist() for b in loader.epoch_batches(idx, 8, 0, 0)]
    shares = [loader.epoch_batches(idx, 8, 0, 0, rank=r, world_size=3) for r in range(3)]
    joined = [sum((shares[r][s].indices.tolist() for r in range(3)), []) for s in range(len(single))]
    assert joined == single


def test_resuming_at_a_step_skips_exactly_those_batches():
    idx = np.arange(30)
    full = loader.epoch_batches(idx, 4, 0, 3, rank=1, world_size=2)
    tail = loader.epoch_batches(idx, 4, 0, 3, rank=1, world_size=2, start_step=5)
    assert [b.indices.tolist() for b in tail] == [b.indices.tolist() for b in full[5:]]


def test_limit_spreads_over_a_class_sorted_split():
    assert loader.subset(10, None).tolist() == list(range(10))
    assert loader.subset(10, 20).tolist() == list(range(10))
    labels = np.repeat(np.arange(5), 20)
    assert set(labels[loader.subset(100, 10)]) == set(range(5))


def test_validation_shares_count_each_image_once():
    for world in (1, 2, 3):
        seen = [i for r in range(world) for b in loader.val_batches(8, 3, None, r, world) for i in b.indices]
        assert sorted(seen) == list(range(8))
    assert sum(len(b.indices) for b in loader.val_batches(9, 4, 4)) == 4


def _collect(images, batches, workers):
    return list(loader.batch_loader(images, batches, workers))


def test_train_batches_are_the_drawn_patches_whatever_the_worker_count(tiny):
    reader = tiny.split("train")
    images = loader.StoredImages(reader, train=True, seed=7)
    batches = loader.epoch_batches(np.arange(len(reader)), 4, seed=7, epoch=1)
    with_workers = _collect(images, batches, workers=2)
    assert reader._handles == {}  # the parent never opened a shard: workers did, after the fork
    in_process = _collect(images, batches, workers=0)
    labels = reader.labels
    for got, again, b in zip(with_workers, in_process, batches):
        assert torch.equal(got["images"], again["images"]) and torch.equal(got["alpha"], again["alpha"])
        assert got["images"].dtype == torch.uint8 and got["images"].shape[1:] == (224, 224, 3)
        assert got["labels"].tolist() == labels[b.indices].tolist() and got["global_size"] == len(b.indices)
        for j, i in enumerate(b.indices):
            d = augment.draw(7, 1, int(i))
            stored = torch.from_numpy(reader.image(int(i)))  # a fresh decode, no buffer
            assert torch.equal(got["images"][j], augment.crop_flip(stored, d.top, d.left, d.flip))
            assert (got["top"][j], got["left"][j], got["flip"][j]) == (d.top, d.left, d.flip)
            assert torch.allclose(got["alpha"][j], torch.tensor(d.alpha, dtype=torch.float32))


def test_val_batches_are_whole_stored_images(tiny):
    reader = tiny.split("val")
    images = loader.StoredImages(reader, train=False)
    (batch,) = _collect(images, loader.val_batches(len(reader), 16, None), workers=1)
    assert batch["images"].shape == (9, 256, 256, 3)
    assert np.array_equal(batch["images"][4].numpy(), reader.image(4))
    assert batch["labels"].tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]


@pytest.mark.parametrize("codec", ["jpeg", "raw"])
def test_decoding_into_a_reused_buffer_gives_pillows_pixels(tmp_path, codec):
    """The one decode path (format.codec, simplejpeg's accurate IDCT) writes into the loader's
    buffer exactly what a fresh decode and Pillow give, image after image."""
    import io

    from PIL import Image

    reader = PreparedDataset(make_dataset(tmp_path, classes=2, train_per_class=2, val_per_class=1, codec=codec)).split("train")
    buffer = np.empty((256, 256, 3), np.uint8)
    for i in range(len(reader)):
        encoded, stored_codec = reader.read_encoded(i)
        assert stored_codec == codec
        fresh = reader.image(i)
        assert reader.image(i, out=buffer) is not None and np.array_equal(buffer, fresh)
        if codec == "jpeg":
            assert np.array_equal(np.asarray(Image.open(io.BytesIO(encoded.tobytes())).convert("RGB")), fresh)


def test_stop_workers_still_reaches_the_workers(tiny):
    """loader.stop_workers relies on DataLoader's private _shutdown_workers and _workers: if a
    torch release renames them, this fails instead of workers silently outliving the loader."""
    from torch.utils.data import DataLoader

    images = loader.StoredImages(tiny.split("train"), train=True)
    iterator = iter(DataLoader(images, sampler=loader.epoch_batches(np.arange(4), 2, 0, 0), batch_size=None, num_workers=2))
    next(iterator)
    assert callable(getattr(iterator, "_shutdown_workers", None)), "torch renamed DataLoader's _shutdown_workers"
    workers = list(getattr(iterator, "_workers", ()))
    assert len(workers) == 2 and all(w.is_alive() for w in workers), "torch renamed DataLoader's _workers"
    loader.stop_workers(iterator)
    assert not any(w.is_alive() for w in workers)


def test_a_damaged_shard_is_one_line_naming_it_even_from_a_worker(tmp_path):
    import h5py

    from alexnet_cli.errors import InputError

    dataset = PreparedDataset(make_dataset(tmp_path, classes=2, train_per_class=2, val_per_class=1))
    reader = dataset.split("train")
    with h5py.File(reader.shard_paths[0], "r+") as f:
        start, stop = f["offsets"][0], f["offsets"][1]
        f["data"][start:stop] = 0  # image 0's JPEG bytes gone
    images = loader.StoredImages(reader, train=True)
    with pytest.raises(InputError) as e:
        _collect(images, loader.epoch_batches(np.arange(4), 4, seed=0, epoch=0), workers=1)
    message = str(e.value)
    assert len(message.splitlines()) == 1 and "Traceback" not in message
    assert str(reader.shard_paths[0]) in message and "rerun `alexnet prep`" in message


def test_a_process_exits_with_a_loader_left_open(tiny, tmp_path):
    """Workers ignore SIGTERM, multiprocessing's way of stopping leftover children at exit: a
    loader never closed (or kept alive by a traceback) must not hang the interpreter's exit."""
    import subprocess
    import sys
    import textwrap

    from tests.conftest import REPO_ROOT

    script = textwrap.dedent(f"""
        import numpy as np
        from alexnet_cli.data import loader
        from alexnet_cli.data.format.index import PreparedDataset
        reader = PreparedDataset({str(tiny.path)!r}).split("train")
        images = loader.StoredImages(reader, train=True)
        kept = loader.batch_loader(images, loader.epoch_batches(np.arange(len(reader)), 2, seed=0, epoch=0), workers=2)
        next(kept)  # workers running; `kept` is never closed
        print("ok", flush=True)
    """)
    env = {**__import__("os").environ, "PYTHONPATH": str(REPO_ROOT)}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def test_many_batches_through_reused_shared_buffers_stay_intact(tmp_path):
    """More batches than shared buffers (1 worker: 5 buffers, 12 batches): every batch the
    consumer kept equals the one read in process, so no buffer was overwritten while in use."""
    reader = PreparedDataset(make_dataset(tmp_path, classes=3, train_per_class=4, val_per_class=1)).split("train")
    images = loader.StoredImages(reader, train=True, seed=3)
    batches = loader.epoch_batches(np.arange(len(reader)), 1, seed=3, epoch=0)
    assert len(batches) > loader.PREFETCH * 1 + 1
    kept = _collect(images, batches, workers=1)
    for got, b in zip(kept, batches, strict=True):
        assert torch.equal(got["images"], images[b]["images"])


def test_a_worker_waits_for_the_buffer_until_the_batch_before_is_released():
    import threading

    shared = loader.SharedBatches(2, 16)
    assert shared.buffers.is_shared() and shared.turn.is_shared()  # torch's _new_shared still exists
    shared.space(0), shared.space(1)  # the first two tasks never wait
    got = []
    waiting = threading.Thread(target=lambda: got.append(shared.space(2)))
    waiting.start()
    waiting.join(0.2)
    assert waiting.is_alive() and not got  # task 2 reuses task 0's buffer: not before its release
    shared.release(0)
    waiting.join(5)
    assert got and got[0].shape == (16,)


def test_shard_bytes_read_from_the_file_equal_h5pys_across_chunks(tmp_path):
    """SplitReader reads an image's bytes with preadv at the chunk offsets HDF5 reports; raw
    images (196 KB) cross the 1 MB chunks, so some take two reads."""
    reader = PreparedDataset(make_dataset(tmp_path, classes=2, train_per_class=6, val_per_class=1, codec="raw", train_shards=1)).split("train")
    _, data, offsets, _, spans = reader._shard(0)
    assert spans is not None
    crossing = [j for j in range(len(offsets) - 1) if offsets[j] // (1 << 20) != (offsets[j + 1] - 1) // (1 << 20)]
    assert crossing
    for j in range(len(offsets) - 1):
        assert np.array_equal(reader.read_encoded(j)[0], data[offsets[j] : offsets[j + 1]])


@pytest.mark.parametrize("train", [True, False])
def test_gpu_decode_path_makes_the_cpu_paths_batches(tiny, train):
    """Everything of --decode gpu but nvJPEG itself: workers ship the stored JPEGs and the
    draws, the decoder gets each batch in one call, the patches are cut on the device; with
    the same decoder, the batches equal the CPU path's bit for bit."""
    from alexnet_cli.data.gpu_decode import GpuDecoder

    reader = tiny.split("train" if train else "val")
    cpu = loader.StoredImages(reader, train=train, seed=5)
    gpu = loader.StoredImages(reader, train=train, seed=5, decode=False)
    batches = loader.epoch_batches(np.arange(len(reader)), 4, seed=5, epoch=2)
    decode = CpuJpegs()
    got = list(loader.batch_loader(gpu, batches, workers=2, take=GpuDecoder(torch.device("cpu"), decode)))
    assert decode.calls == [len(b.indices) for b in batches]
    for g, c in zip(got, _collect(cpu, batches, workers=0), strict=True):
        assert g.keys() == c.keys()
        for key in c:
            assert torch.equal(torch.as_tensor(g[key]), torch.as_tensor(c[key])), key


def test_gpu_decode_is_refused_in_one_line_without_cuda(tiny, tmp_path):
    from alexnet_cli.data.gpu_decode import nvjpeg
    from alexnet_cli.errors import InputError
    from tests.conftest import run_cli

    with pytest.raises(InputError, match="needs a CUDA device"):
        nvjpeg(torch.device("cpu"))
    r = run_cli("train", "--data", tiny.path, "--run-dir", tmp_path / "run", "--gpus", "0", "--decode", "gpu")
    err = r.stderr.decode()
    assert r.returncode != 0 and len(err.strip().splitlines()) == 1 and "--decode gpu needs a CUDA device" in err, err
    r = run_cli("train", "--data", tiny.path, "--run-dir", tmp_path / "run", "--gpus", "0", "--decode", "tpu")
    assert r.returncode != 0 and "--decode tpu: choose one of cpu, gpu" in r.stderr.decode()


def test_raw_shards_have_no_jpeg_for_the_gpu_to_decode(tmp_path):
    from alexnet_cli.errors import InputError

    reader = PreparedDataset(make_dataset(tmp_path, classes=2, train_per_class=2, val_per_class=1, codec="raw")).split("train")
    images = loader.StoredImages(reader, train=True, decode=False)
    with pytest.raises(InputError, match="stores raw pixels, no JPEG to decode"):
        images[loader.epoch_batches(np.arange(4), 4, 0, 0)[0]]


def test_training_imports_without_simplejpeg_and_the_cpu_decoder_says_what_is_missing():
    """A GPU machine may lack simplejpeg (no wheel carried): --decode gpu must still run, and
    the CPU decoder must say what to install instead of failing at import."""
    import subprocess
    import sys

    from tests.conftest import REPO_ROOT

    script = (
        "import sys; sys.modules['simplejpeg'] = None\n"
        "import numpy as np, alexnet_cli.train, alexnet_cli.data.gpu_decode\n"
        "from alexnet_cli.data.imaging import load_256\n"
        "from alexnet_cli.data.format.codec import decode_image\n"
        "try:\n    decode_image(np.zeros(8, np.uint8), 'jpeg')\n"
        "except Exception as e:\n    print(type(e).__name__, e)\n"
    )
    env = {**__import__("os").environ, "PYTHONPATH": str(REPO_ROOT)}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("InputError simplejpeg is not installed: pip install simplejpeg"), done.stdout


def test_training_with_gpu_decoding_ends_where_cpu_decoding_does(tmp_path, monkeypatch):
    """`alexnet train --decode gpu` end to end, the CPU decoder standing in for nvJPEG: the
    option reaches the loader, batches reach train_input and validation from the device
    path, and the run ends with the CPU path's weights, bit for bit."""
    from alexnet_cli.config import TrainConfig
    from alexnet_cli.data import gpu_decode
    from alexnet_cli.progress import TrainProgress
    from alexnet_cli.train import train

    data = make_dataset(tmp_path / "data", classes=2, train_per_class=4, val_per_class=2)
    monkeypatch.setattr(gpu_decode, "nvjpeg", lambda device: CpuJpegs())
    summaries = {}
    for decode in ("cpu", "gpu"):
        config = TrainConfig(data=str(data), run_dir=str(tmp_path / decode), epochs=1, batch_size=4, workers=1,
                             decode=decode, checkpoint_minutes=1e9)
        summaries[decode] = train(config, TrainProgress(enabled=False))
    assert summaries["gpu"]["last_epoch"]["val_loss"] == summaries["cpu"]["last_epoch"]["val_loss"]
    cpu, gpu = (torch.load(tmp_path / d / "last.pt", weights_only=True)["model"] for d in ("cpu", "gpu"))
    assert all(torch.equal(cpu[k], gpu[k]) for k in cpu)


def test_a_batch_nvjpeg_cannot_decode_is_one_line_pointing_to_the_cpu_decoder(tiny):
    from alexnet_cli.data.gpu_decode import GpuDecoder
    from alexnet_cli.errors import InputError

    def broken(jpegs):
        raise RuntimeError("Failed to get image info: 3\nException raised from decode_images")

    images = loader.StoredImages(tiny.split("train"), train=True, decode=False)
    batches = loader.epoch_batches(np.arange(4), 4, 0, 0)
    with pytest.raises(InputError) as e:
        list(loader.batch_loader(images, batches, workers=1, take=GpuDecoder(torch.device("cpu"), broken)))
    message = str(e.value)
    assert len(message.splitlines()) == 1 and "Failed to get image info: 3" in message and "--decode cpu" in message


def test_patches_cut_on_the_device_are_the_workers_patches(tiny):
    """A GPU fed by CPU decoding gets whole images and cuts them itself (ToDevice); the
    batches equal those of workers cutting the patches (here the 'device' is the CPU)."""
    reader = tiny.split("train")
    batches = loader.epoch_batches(np.arange(len(reader)), 4, seed=3, epoch=2)
    cut_by_workers = _collect(loader.StoredImages(reader, train=True, seed=3), batches, workers=1)
    whole = loader.StoredImages(reader, train=True, seed=3, crop=False)
    to_device = loader.ToDevice(torch.device("cpu"), crop=True)
    cut_on_device = list(loader.batch_loader(whole, batches, 1, take=to_device))
    for a, b in zip(cut_by_workers, cut_on_device, strict=True):
        assert a["images"].shape == b["images"].shape == (len(a["labels"]), 224, 224, 3)
        assert torch.equal(a["images"], b["images"]) and torch.equal(a["alpha"], b["alpha"])
        assert torch.equal(a["labels"], b["labels"])


def test_whole_images_to_the_device_are_the_stored_images(tiny):
    reader = tiny.split("val")
    images = loader.StoredImages(reader, train=False)
    batches = loader.val_batches(len(reader), 2)
    taken = list(loader.batch_loader(images, batches, 2, take=loader.ToDevice(torch.device("cpu"))))
    for got, b in zip(taken, batches, strict=True):
        assert torch.equal(got["images"], images[b]["images"]) and not got["images"].is_shared()


def _record_releases(monkeypatch, record) -> None:
    """SharedBatches.release as before, calling record(pos) first."""
    release = loader.SharedBatches.release
    monkeypatch.setattr(loader.SharedBatches, "release", lambda self, pos: (record(pos), release(self, pos)))


def test_a_borrowed_batch_is_its_shared_buffer_until_the_next_is_asked_for(tmp_path, monkeypatch):
    """borrow=True lends each batch's shared buffer (no copy) and gives it back to the workers
    exactly when the consumer asks for the next batch: while the consumer holds batch k, the
    buffers of batches 0..k-1 and no other have been released; every batch, copied on receipt,
    equals the one read in process (more batches than buffers: 12 against 5)."""
    reader = PreparedDataset(make_dataset(tmp_path, classes=3, train_per_class=4, val_per_class=1)).split("train")
    images = loader.StoredImages(reader, train=True, seed=5)
    batches = loader.epoch_batches(np.arange(len(reader)), 1, seed=5, epoch=0)
    released: list[int] = []
    _record_releases(monkeypatch, released.append)
    for k, batch in enumerate(loader.batch_loader(images, batches, 1, borrow=True)):
        assert released == list(range(k))
        assert batch["images"].is_shared()  # the workers' buffer itself
        assert torch.equal(batch["images"], images[batches[k]]["images"])
    assert released == list(range(len(batches)))


def test_a_take_s_copies_finish_before_its_buffer_is_reused(tiny, monkeypatch):
    """ToDevice's DMA reads the buffer after the take returns: batch_loader calls the take's
    `wait_copied` before each release, the last one and an early stop's included, and with
    pin_memory registers the buffers with CUDA for the loop and unregisters them after it."""
    events: list[str] = []
    _record_releases(monkeypatch, lambda pos: events.append(f"release {pos}"))

    class Cudart:  # CUDA's runtime as batch_loader sees it; the real one needs a GPU
        def cudaHostRegister(self, pointer, size, flags):
            events.append(f"register {size}")
            return 0

        def cudaHostUnregister(self, pointer):
            events.append("unregister")
            return 0

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "cudart", Cudart)

    class Take:
        def __call__(self, batch, space):
            return loader.as_tensors(batch, space, (224, 224, 3))

        def wait_copied(self):
            events.append("wait")

    reader = tiny.split("train")
    images = loader.StoredImages(reader, train=True, seed=1)
    batches = loader.epoch_batches(np.arange(len(reader)), 2, seed=1, epoch=0)
    assert len(batches) > loader.PREFETCH + 1  # buffers are reused
    for _ in loader.batch_loader(images, batches, 1, pin_memory=True, take=Take()):
        pass
    size = (loader.PREFETCH + 1) * images.space_bytes(2)
    releases = [e for k in range(len(batches)) for e in ("wait", f"release {k}")]
    assert events == [f"register {size}", *releases, "unregister"]
    events.clear()
    with closing(loader.batch_loader(images, batches, 1, pin_memory=True, take=Take())) as it:
        next(it)
    assert events == [f"register {size}", "wait", "release 0", "unregister"]


def test_without_cuda_nothing_is_registered(tiny):
    if torch.cuda.is_available():
        pytest.skip("a CUDA machine registers")
    assert loader.SharedBatches(2, 16).register_with_cuda() is None


def test_training_and_validation_on_the_cpu_borrow_their_batches(tiny):
    """`alexnet train` on the CPU takes each batch as a view of the workers' shared buffer (no
    copy in the main process), its train and its val batches alike."""
    from alexnet_cli.data.inputs import PreparedInputs
    from alexnet_cli.distributed import DistInfo

    inputs = PreparedInputs(str(tiny.path), 4, seed=0, lighting_std=0.1, limit=None, workers=1,
                            rank=DistInfo(), device=torch.device("cpu"))
    for batches in (inputs.train_batches(0, 0), inputs.val_batches()):
        with closing(batches):
            assert next(batches)["images"].is_shared()
