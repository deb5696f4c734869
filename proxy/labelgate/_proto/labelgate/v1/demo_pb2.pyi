from labelgate._proto.labelgate.v1 import classification_pb2 as _classification_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class ListCustomersRequest(_message.Message):
    __slots__ = ("customer_ids",)
    CUSTOMER_IDS_FIELD_NUMBER: _ClassVar[int]
    customer_ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, customer_ids: _Optional[_Iterable[int]] = ...) -> None: ...

class GetCustomerRequest(_message.Message):
    __slots__ = ("customer_id",)
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    customer_id: int
    def __init__(self, customer_id: _Optional[int] = ...) -> None: ...

class Customer(_message.Message):
    __slots__ = ("customer_id", "segment", "name", "email", "ssn", "card_number", "notes", "account_secret")
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    SEGMENT_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    EMAIL_FIELD_NUMBER: _ClassVar[int]
    SSN_FIELD_NUMBER: _ClassVar[int]
    CARD_NUMBER_FIELD_NUMBER: _ClassVar[int]
    NOTES_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_SECRET_FIELD_NUMBER: _ClassVar[int]
    customer_id: int
    segment: str
    name: str
    email: str
    ssn: str
    card_number: str
    notes: str
    account_secret: str
    def __init__(self, customer_id: _Optional[int] = ..., segment: _Optional[str] = ..., name: _Optional[str] = ..., email: _Optional[str] = ..., ssn: _Optional[str] = ..., card_number: _Optional[str] = ..., notes: _Optional[str] = ..., account_secret: _Optional[str] = ...) -> None: ...
