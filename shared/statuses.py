"""Dossier status codes (TrangThaiHoSo) and channels (KenhThucHien), as the national portal defines them."""

from enum import IntEnum


class Status(IntEnum):
    SUBMITTED = 1  # Mới đăng ký
    RECEIVED = 2  # Được tiếp nhận
    REFUSED = 3  # Không được tiếp nhận
    PROCESSING = 4  # Đang xử lý
    SUPPLEMENT_REQUESTED = 5  # Yêu cầu bổ sung giấy tờ
    AWAITING_PAYMENT = 6  # Yêu cầu thực hiện nghĩa vụ tài chính
    WITHDRAWN = 7  # Công dân yêu cầu rút hồ sơ
    STOPPED = 8  # Dừng xử lý
    RESOLVED = 9  # Đã xử lý xong
    RESULT_RETURNED = 10  # Đã trả kết quả


STATUS_NAMES_VI = {
    1: "Mới đăng ký",
    2: "Được tiếp nhận",
    3: "Không được tiếp nhận",
    4: "Đang xử lý",
    5: "Yêu cầu bổ sung giấy tờ",
    6: "Yêu cầu thực hiện nghĩa vụ tài chính",
    7: "Công dân yêu cầu rút hồ sơ",
    8: "Dừng xử lý",
    9: "Đã xử lý xong",
    10: "Đã trả kết quả",
}


class Channel(IntEnum):
    IN_PERSON = 1  # trực tiếp (also when missing)
    ONLINE = 2  # trực tuyến
    POSTAL = 3  # qua bưu chính công ích


CHANNEL_NAMES_VI = {1: "Trực tiếp", 2: "Trực tuyến", 3: "Qua bưu chính công ích"}
