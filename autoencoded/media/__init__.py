"""Video files in and out, for every command: find ffmpeg, probe a file, write one atomically.

`tools` finds ffmpeg/ffprobe and summarises their complaints, `probe` says what a file holds (size, exact
frame rate, declared length, pixel aspect, audio), `writers` writes frames to a hidden partial file that
is renamed only when complete. Training (prepare), live (recordings) and render all use these.
"""
