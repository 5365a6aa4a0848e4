from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class MediaStream(_message.Message):
    __slots__ = ("index", "kind", "codec", "duration", "width", "height", "fps", "display_aspect_ratio", "sample_rate", "channels", "channel_layout")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    CODEC_FIELD_NUMBER: _ClassVar[int]
    DURATION_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    FPS_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_ASPECT_RATIO_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_LAYOUT_FIELD_NUMBER: _ClassVar[int]
    index: int
    kind: str
    codec: str
    duration: float
    width: int
    height: int
    fps: float
    display_aspect_ratio: str
    sample_rate: int
    channels: int
    channel_layout: str
    def __init__(self, index: _Optional[int] = ..., kind: _Optional[str] = ..., codec: _Optional[str] = ..., duration: _Optional[float] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., fps: _Optional[float] = ..., display_aspect_ratio: _Optional[str] = ..., sample_rate: _Optional[int] = ..., channels: _Optional[int] = ..., channel_layout: _Optional[str] = ...) -> None: ...

class MediaInfo(_message.Message):
    __slots__ = ("duration", "format", "size", "streams")
    DURATION_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    STREAMS_FIELD_NUMBER: _ClassVar[int]
    duration: float
    format: str
    size: int
    streams: _containers.RepeatedCompositeFieldContainer[MediaStream]
    def __init__(self, duration: _Optional[float] = ..., format: _Optional[str] = ..., size: _Optional[int] = ..., streams: _Optional[_Iterable[_Union[MediaStream, _Mapping]]] = ...) -> None: ...

class MediaRef(_message.Message):
    __slots__ = ("storage_key",)
    STORAGE_KEY_FIELD_NUMBER: _ClassVar[int]
    storage_key: str
    def __init__(self, storage_key: _Optional[str] = ...) -> None: ...
