"""Recording and playback: segments remuxed from the shared pull, a SQLite index per camera, retention, HLS."""
