"""Data sources: Caffe-format databases and data set converters.

- `engine.data.lmdb_io`: write and read Caffe's LMDB databases of serialized Datum records
  (`write_datums`, `write_arrays`, `LMDBWriter`, `LMDBReader`, `array_to_datum`, `datum_to_array`).
- `engine.data.mnist`: MNIST from the IDX files or the pickled `mnist.pkl.gz`, and
  `python -m engine.data.mnist --out DIR` to build Caffe's mnist_train_lmdb / mnist_test_lmdb.

The modules are imported on use (`import engine.data.mnist`), so that importing this package
costs nothing and the `lmdb` package is needed only where a database is opened.
"""
