"""evaluation: the UME/IME protocols (`protocols`, which call the training engine) and the
reports. Above training: training imports nothing from here; the scoring primitives both use
live below them (`iteacnet.metrics`, `iteacnet.data.splits`)."""
