"""Media layer for long video jobs: stream frames in chunks, encode each chunk as an H.264
segment, join the segments and put the original audio back. ffmpeg comes from imageio-ffmpeg."""
from .ffmpeg import Prober
from .video import (MediaError, VideoInfo, concat_segments, ffmpeg_exe, limit_pixels, probe,
                    read_chunks, restore_size, write_segment)

__all__ = ["MediaError", "Prober", "VideoInfo", "concat_segments", "ffmpeg_exe", "limit_pixels", "probe",
           "read_chunks", "restore_size", "write_segment"]
