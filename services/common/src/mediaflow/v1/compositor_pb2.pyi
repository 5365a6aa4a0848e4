from mediaflow.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ProbeRequest(_message.Message):
    __slots__ = ("media",)
    MEDIA_FIELD_NUMBER: _ClassVar[int]
    media: _common_pb2.MediaRef
    def __init__(self, media: _Optional[_Union[_common_pb2.MediaRef, _Mapping]] = ...) -> None: ...

class GetCapabilitiesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Capabilities(_message.Message):
    __slots__ = ("encoder", "encoder_reason", "nvenc", "ffmpeg_version", "resolutions", "libass")
    ENCODER_FIELD_NUMBER: _ClassVar[int]
    ENCODER_REASON_FIELD_NUMBER: _ClassVar[int]
    NVENC_FIELD_NUMBER: _ClassVar[int]
    FFMPEG_VERSION_FIELD_NUMBER: _ClassVar[int]
    RESOLUTIONS_FIELD_NUMBER: _ClassVar[int]
    LIBASS_FIELD_NUMBER: _ClassVar[int]
    encoder: str
    encoder_reason: str
    nvenc: bool
    ffmpeg_version: str
    resolutions: _containers.RepeatedScalarFieldContainer[str]
    libass: bool
    def __init__(self, encoder: _Optional[str] = ..., encoder_reason: _Optional[str] = ..., nvenc: _Optional[bool] = ..., ffmpeg_version: _Optional[str] = ..., resolutions: _Optional[_Iterable[str]] = ..., libass: _Optional[bool] = ...) -> None: ...

class ThumbnailRequest(_message.Message):
    __slots__ = ("media", "time", "width")
    MEDIA_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    media: _common_pb2.MediaRef
    time: float
    width: int
    def __init__(self, media: _Optional[_Union[_common_pb2.MediaRef, _Mapping]] = ..., time: _Optional[float] = ..., width: _Optional[int] = ...) -> None: ...

class ThumbnailResponse(_message.Message):
    __slots__ = ("image", "content_type", "width", "height")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    image: bytes
    content_type: str
    width: int
    height: int
    def __init__(self, image: _Optional[bytes] = ..., content_type: _Optional[str] = ..., width: _Optional[int] = ..., height: _Optional[int] = ...) -> None: ...
