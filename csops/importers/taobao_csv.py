"""``--from taobao-csv``: the Taobao/Tmall seller-center 订单报表 (41/54/61-column layouts).

GBK/GB18030 text, one row per order, Chinese headers (some end in a space: stripped), Excel
protected ids ``="…"``, phones with a leading ``'``. Times are China time without an offset
(read in ``[import] timezone``, else the shop's zone). Items come from 宝贝标题 (titles joined
with ``，``) and 宝贝总数量; the 订单报表 has no per-item prices, so the goods amount is split
over the items in proportion to quantity (docs/formats.md).
"""

from __future__ import annotations

from csops.importers.base import (
    CsvFormat,
    FieldError,
    ParseEnv,
    Row,
    clean_text,
    normalize_email,
    parse_money,
    parse_quantity,
    parse_time,
    require,
    unquote_phone,
    unwrap,
)
from csops.model import Customer, Order, OrderItem, allocate

STATUS = {
    "没有创建支付宝交易": "pending",
    "等待买家付款": "pending",
    "等待买家确认货到付款订单信息": "pending",
    "买家已付款，等待卖家发货": "paid",
    "买家已确认，等待卖家发货": "paid",
    "卖家部分发货": "shipped",
    "卖家已发货，等待买家确认": "shipped",
    "卖家已发货，等待买家确认收货并付款": "shipped",
    "买家已签收": "delivered",
    "买家已签收，回款至卖家": "delivered",
    "交易成功": "completed",
    "交易关闭": "cancelled",
    "交易被淘宝关闭": "cancelled",
}

REQUIRED = ("订单编号", "买家会员名", "总金额", "买家实际支付金额", "订单状态", "订单创建时间")
CURRENCY = "CNY"


def _key(row: Row) -> str:
    text = require(row, "订单编号")
    if not text.isdigit():
        raise FieldError("订单编号", f"not an order number: {text[:30]!r}", "digits")
    return text


def _items(title: str | None, kinds: int, qty: int, goods: int) -> list[OrderItem]:
    titles = [t.strip() for t in (title or "").split("，")] if kinds > 1 else [title or ""]
    if kinds > 1 and (len(titles) != kinds or not all(titles)):
        titles = [title or ""]  # a title that itself contains "，": keep it whole
    qtys = allocate(qty, [1] * len(titles)) if qty >= len(titles) else [1] * len(titles)
    totals = allocate(goods, qtys)
    return [
        OrderItem(
            line_no=n,
            sku=None,
            name=t or None,
            quantity=q,
            unit_price_minor=(tot // q) if q else tot,
            total_minor=tot,
        )
        for n, (t, q, tot) in enumerate(zip(titles, qtys, totals, strict=True), 1)
    ]


def parse_group(rows: list[tuple[int, Row]], env: ParseEnv) -> Order:
    line, row = rows[-1]  # an order number repeated on consecutive rows: the last one wins
    raw_status = unwrap(row.get("订单状态")).replace(",", "，")
    status = STATUS.get(raw_status)
    if status is None:
        raise FieldError("订单状态", f"unknown status {raw_status[:30]!r}", "、".join(STATUS), line)
    c = CURRENCY
    goods = parse_money(row.get("买家应付货款", ""), c, "买家应付货款")
    shipping = parse_money(row.get("买家应付邮费", ""), c, "买家应付邮费")
    total = parse_money(row.get("总金额", ""), c, "总金额", blank=None)
    paid_amount = parse_money(row.get("买家实际支付金额", ""), c, "买家实际支付金额")
    if "退款金额" in row:
        refunded = parse_money(row.get("退款金额", ""), c, "退款金额")
    else:  # the 41-column layout: paid = total − refund on closed/refunded orders
        refunded = max(0, total - paid_amount) if unwrap(row.get("订单付款时间")) else 0
    amounts = {"买家应付货款": goods, "买家应付邮费": shipping, "总金额": total}
    amounts.update({"买家实际支付金额": paid_amount, "退款金额": refunded})
    negative = next((name for name, v in amounts.items() if v < 0), None)
    if negative:
        raise FieldError(negative, "negative amount", "an amount ≥ 0", line)
    reason = unwrap(row.get("订单关闭原因"))
    if status == "cancelled" and (refunded > 0 or reason == "退款"):
        status = "refunded"
    elif status in ("completed", "delivered", "shipped", "paid") and refunded > 0:
        status = "refunded" if refunded >= total else "partially_refunded"
    kinds = parse_quantity(row.get("宝贝种类", ""), "宝贝种类", blank=1) or 1
    qty = parse_quantity(row.get("宝贝总数量", ""), "宝贝总数量", blank=1)
    created = parse_time(row.get("订单创建时间", ""), env, "订单创建时间")
    if created is None:
        raise FieldError("订单创建时间", "empty", "the order's creation time", line)
    confirmed = parse_time(row.get("确认收货时间", ""), env, "确认收货时间")
    shipped = parse_time(row.get("发货时间", ""), env, "发货时间")
    phone = unquote_phone(row.get("联系手机")) or unquote_phone(row.get("联系电话"))
    number = _key(row)
    return Order(
        platform="taobao",
        external_id=number,
        number=number,
        status=status,
        currency=c,
        created_at=created,
        customer=Customer(
            email=normalize_email(row.get("买家支付宝账号")),
            phone=phone or None,
            name=clean_text(row.get("收货人姓名")),
            platform_buyer_id=clean_text(row.get("买家会员名"), 200),
        ),
        subtotal_minor=goods,
        shipping_minor=shipping,
        discount_minor=max(0, goods + shipping - total),
        total_minor=total,
        refunded_minor=refunded,
        paid_at=parse_time(row.get("订单付款时间", ""), env, "订单付款时间"),
        shipped_at=shipped,
        delivered_at=confirmed,
        cancelled_at=None,
        items=_items(clean_text(row.get("宝贝标题")), kinds, qty, goods),
    )


SOURCE = CsvFormat(
    name="taobao-csv",
    platform="taobao",
    required=REQUIRED,
    parse_group=parse_group,
    group_key=_key,
    timezone="Asia/Shanghai",  # the seller center writes China time, whatever the shop's zone
)
