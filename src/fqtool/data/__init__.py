"""Data layer: RecordIO, image decoding, datasets over .rec / list / folder, .bin verification sets,
list files and the convert-rec / make-list cores. Import the submodules directly."""
