"""Write the April-2024 demo samples (deterministic): Shopify CSV, Taobao GBK CSV, Amazon TSV.

The shared samples are dated 2026; the demo clock is 2024-04-20, so follow-ups, surveys, returns
and KPIs need orders shipped/delivered in the weeks before it. Run from the repo root:
    python scripts/gen_import_samples.py
"""

from __future__ import annotations

import csv
import random
from datetime import datetime, timedelta, timezone
from pathlib import Path

OUT = Path(__file__).resolve().parent / "samples"
CN = timezone(timedelta(hours=8))
rng = random.Random(20240420)

SHOPIFY_HEADER = (OUT / "shopify_orders_export.csv").read_text(encoding="utf-8").splitlines()[0]
TAOBAO_HEADER = (OUT / "taobao_orders_export.csv").read_bytes().decode("gb18030").splitlines()[0]
AMAZON_HEADER = (OUT / "amazon_all_orders.tsv").read_text(encoding="utf-8").splitlines()[0]

PRODUCTS = [
    ("LN-NAP-SAGE", "Linen Napkin Set - Sage", "亚麻餐巾套装 鼠尾草绿", 128),
    ("BW-CAN-TALL", "Beeswax Candle, Tall", "蜂蜡蜡烛 高款", 45),
    ("CM-DAWN-12", 'Ceramic Mug "Dawn", 12oz', "陶瓷马克杯 晨光 350ml", 59),
    ("TT-STRIPE", "Tea Towel, Stripe", "条纹茶巾 三条装", 30),
    ("WT-OAT", "Wool Throw, Oat", "羊毛盖毯 燕麦色", 256),
]
PEOPLE = [
    ("Li Na", "li.na@example.cn", "+86 138 0013 8001"),
    ("Wang Fang", "wang.fang@example.cn", "+86 138 0013 8002"),
    ("Zhang Wei", "zhang.wei@example.cn", ""),
    ("Chen Jing", "Chen.Jing@Example.CN", "'+86 138 0013 8004"),
    ("Liu Yang", "liu.yang@example.cn", ""),
    ("Huang Min", "huang.min@example.cn", "+86 138 0013 8006"),
    ("Zhao Lei", "zhao.lei@example.cn", ""),
    ("Wu Xia", "wu.xia@example.cn", "+86 138 0013 8008"),
]


def ts(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%d %H:%M:%S %z")


def shopify() -> None:
    cols = SHOPIFY_HEADER.split(",")
    rows = []
    start = datetime(2024, 3, 22, 9, 0, tzinfo=CN)
    for n in range(40):
        number = f"#{2001 + n}"
        created = start + timedelta(hours=int(n * 16.5) + rng.randrange(0, 5))
        name, email, phone = PEOPLE[n % len(PEOPLE)]
        lines = rng.sample(PRODUCTS, rng.choice([1, 1, 2, 3]))
        qtys = [rng.choice([1, 1, 2]) for _ in lines]
        subtotal = sum(p[3] * q for p, q in zip(lines, qtys, strict=True))
        shipping = 0 if subtotal >= 99 else 10
        total = subtotal + shipping
        age = (datetime(2024, 4, 20, 10, tzinfo=CN) - created).days
        kind = "fulfilled" if age >= 3 else "paid"
        if n in (5, 23):
            kind = "refunded"
        if n in (11,):
            kind = "cancelled"
        if n in (30,):
            kind = "partial_refund"
        if n == 39:
            kind = "pending"
        fin = {
            "fulfilled": "paid",
            "paid": "paid",
            "refunded": "refunded",
            "cancelled": "voided",
            "partial_refund": "partially_refunded",
            "pending": "pending",
        }[kind]
        fulfilled = kind in ("fulfilled", "refunded", "partial_refund")
        paid_at = "" if kind in ("pending", "cancelled") else ts(created + timedelta(seconds=40))
        fulfilled_at = (
            ts(created + timedelta(days=1, hours=rng.randrange(2, 20))) if fulfilled else ""
        )
        refunded = {"refunded": total, "partial_refund": lines[0][3]}.get(kind, 0)
        for i, (p, q) in enumerate(zip(lines, qtys, strict=True)):
            r = dict.fromkeys(cols, "")
            r.update(
                {
                    "Name": number,
                    "Email": email,
                    "Created at": ts(created),
                    "Lineitem quantity": str(q),
                    "Lineitem name": p[1],
                    "Lineitem price": f"{p[3]:.2f}",
                    "Lineitem sku": p[0],
                    "Lineitem requires shipping": "true",
                    "Lineitem taxable": "true",
                    "Lineitem fulfillment status": "fulfilled" if fulfilled else "pending",
                    "Vendor": "Lumen & Loom",
                    "Lineitem discount": "0.00",
                }
            )
            if i == 0:
                r.update(
                    {
                        "Financial Status": fin,
                        "Paid at": paid_at,
                        "Fulfillment Status": "fulfilled" if fulfilled else "unfulfilled",
                        "Fulfilled at": fulfilled_at,
                        "Accepts Marketing": "yes" if n % 3 == 0 else "no",
                        "Currency": "CNY",
                        "Subtotal": f"{subtotal:.2f}",
                        "Shipping": f"{shipping:.2f}",
                        "Taxes": "0.00",
                        "Total": f"{total:.2f}",
                        "Discount Amount": "0.00",
                        "Shipping Method": "Standard",
                        "Billing Name": name,
                        "Shipping Name": name,
                        "Billing Country": "CN",
                        "Shipping Country": "CN",
                        "Cancelled at": ts(created + timedelta(hours=3))
                        if kind == "cancelled"
                        else "",
                        "Payment Method": "Shopify Payments",
                        "Refunded Amount": f"{refunded:.2f}",
                        "Outstanding Balance": "0.00",
                        "Id": str(5560002001 + n),
                        "Risk Level": "Low",
                        "Source": "web",
                        "Phone": phone,
                    }
                )
            rows.append(r)
    with (OUT / "shopify_orders_april2024.csv").open("w", encoding="utf-8", newline="") as fh:
        w = csv.DictWriter(fh, cols, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)


def taobao() -> None:
    cols = TAOBAO_HEADER.split(",")
    names = ["小鹿乱撞", "tb_咖啡不加糖", "晴天", "阿杰", "momo", "青柠", "大橘", "米粒"]
    out = []
    start = datetime(2024, 3, 28, 10, 0)
    for n in range(16):
        created = start + timedelta(hours=n * 21 + rng.randrange(0, 4))
        p = PRODUCTS[n % len(PRODUCTS)]
        q = 1 + n % 2
        goods = p[3] * q
        age = (datetime(2024, 4, 20, 10) - created).days
        status = (
            "交易成功"
            if age >= 8
            else ("卖家已发货，等待买家确认" if age >= 2 else "买家已付款，等待卖家发货")
        )
        refund = 0
        if n == 4:
            status, refund = "交易关闭", goods
        if n == 9:
            status = "等待买家付款"
        r = dict.fromkeys(cols, "")
        r.update(
            {
                "订单编号": f'="{4102261830551200001 + n}"',
                "买家会员名": names[n % len(names)],
                "买家应付货款": f"{goods:.2f}",
                "买家应付邮费": "0.00",
                "总金额": f"{goods:.2f}",
                "买家实际支付金额": "0.00" if n == 9 else f"{goods - refund:.2f}",
                "订单状态": status,
                "收货人姓名": names[n % len(names)][-2:],
                "收货地址 ": "浙江省 杭州市 西湖区 文三路 100号(310000)",
                "联系手机": f"'1390000{n:04d}",
                "订单创建时间": created.strftime("%Y-%m-%d %H:%M:%S"),
                "订单付款时间 ": ""
                if n == 9
                else (created + timedelta(minutes=1)).strftime("%Y-%m-%d %H:%M:%S"),
                "宝贝标题 ": p[2],
                "宝贝种类 ": "1",
                "宝贝总数量": str(q),
                "店铺名称": "织光家居",
                "订单关闭原因": "退款" if n == 4 else ("订单未关闭" if n != 9 else ""),
                "是否手机订单": "手机订单",
                "退款金额": f"{refund:.2f}",
                "确认收货时间": (created + timedelta(days=6, hours=3)).strftime("%Y-%m-%d %H:%M:%S")
                if status == "交易成功"
                else "",
                "打款商家金额": f"{goods:.2f}" if status == "交易成功" else "",
            }
        )
        out.append(r)
    with (OUT / "taobao_orders_april2024.csv").open("w", encoding="gbk", newline="") as fh:
        fh.write(",".join(cols) + "\r\n")
        for r in out:
            # Taobao writes the protected id unquoted: ="…" (csv quoting would hide the form).
            cells = [r[c] if c == "订单编号" else _q(r[c]) for c in cols]
            fh.write(",".join(cells) + "\r\n")


def _q(value: str) -> str:
    if any(ch in value for ch in ',"\r\n'):
        return '"' + value.replace('"', '""') + '"'
    return value


def amazon() -> None:
    cols = AMAZON_HEADER.split("\t")
    lines = []
    start = datetime(2024, 3, 30, 6, 0, tzinfo=timezone.utc)
    for n in range(12):
        created = start + timedelta(hours=n * 41)
        age = (datetime(2024, 4, 20, 2, tzinfo=timezone.utc) - created).days
        status = "Shipped" if age >= 2 else "Pending"
        if n == 6:
            status = "Cancelled"
        for i, p in enumerate(PRODUCTS[n % 3 : n % 3 + 1 + n % 2]):
            q = 1
            r = dict.fromkeys(cols, "")
            r.update(
                {
                    "amazon-order-id": f"114-5560001-{n:07d}",
                    "purchase-date": created.strftime("%Y-%m-%dT%H:%M:%S+00:00"),
                    "last-updated-date": (created + timedelta(days=1, hours=5)).strftime(
                        "%Y-%m-%dT%H:%M:%S+00:00"
                    ),
                    "order-status": status,
                    "fulfillment-channel": "Amazon",
                    "sales-channel": "Amazon.com",
                    "ship-service-level": "Standard",
                    "product-name": p[1],
                    "sku": p[0],
                    "asin": f"B0TEST{n:02d}{i}",
                    "item-status": "Cancelled" if status == "Cancelled" else status,
                    "quantity": "0" if status == "Cancelled" else str(q),
                    "currency": "USD",
                    "item-price": "" if status == "Cancelled" else f"{p[3] / 7:.2f}",
                    "item-tax": "" if status == "Cancelled" else "1.00",
                    "ship-city": "DENVER",
                    "ship-state": "CO",
                    "ship-postal-code": "80202",
                    "ship-country": "US",
                    "is-business-order": "false",
                }
            )
            lines.append("\t".join(r[c] for c in cols))
    (OUT / "amazon_all_orders_april2024.tsv").write_text(
        "\t".join(cols) + "\n" + "\n".join(lines) + "\n", encoding="utf-8"
    )


def conversations() -> None:
    header = (OUT / "conversations.csv").read_text(encoding="utf-8").splitlines()[0].split(",")
    rows = []
    start = datetime(2024, 4, 1, 9, 0, tzinfo=CN)
    kinds = ["pre_sale", "after_sale", "complaint", "after_sale", "logistics"]
    for n in range(30):
        created = start + timedelta(hours=n * 15 + rng.randrange(0, 6))
        first = created + timedelta(minutes=rng.choice([1, 2, 3, 5, 8, 15, 40, 90, 300]))
        resolved = first + timedelta(hours=rng.choice([0, 1, 2, 5, 20, 30]))
        if resolved > datetime(2024, 4, 20, 10, tzinfo=CN) or n % 11 == 7:
            resolved = None
        _name, email, _ = PEOPLE[n % len(PEOPLE)]
        rows.append(
            {
                "conversation_id": f"C-24{n:03d}",
                "channel": ["chat", "email", "phone", "wechat"][n % 4],
                "order_number": f"#{2001 + n}" if n % 3 else "",
                "customer_email": email,
                "kind": kinds[n % len(kinds)],
                "created_at": created.isoformat(),
                "first_response_at": first.isoformat(),
                "resolved_at": resolved.isoformat() if resolved else "",
                "agent": ["mei", "tom", "ana"][n % 3],
            }
        )
    with (OUT / "conversations_april2024.csv").open("w", encoding="utf-8", newline="") as fh:
        w = csv.DictWriter(fh, header, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)


def zendesk() -> None:
    cols = [
        "Id",
        "Requester",
        "Requester email",
        "Subject",
        "Status",
        "Via",
        "Ticket type",
        "Priority",
        "Created at",
        "Updated at",
        "Solved at",
        "First reply time in minutes",
        "Full resolution time in minutes",
        "Order number",
    ]
    rows = []
    start = datetime(2024, 4, 3, 10, 0)
    for n in range(12):
        created = start + timedelta(hours=n * 29)
        reply = rng.choice([3, 12, 45, 130, 600])
        solved = created + timedelta(minutes=reply + rng.choice([30, 240, 1500]))
        open_ = n % 5 == 4 or solved > datetime(2024, 4, 20, 10)
        name, email, _ = PEOPLE[(n + 3) % len(PEOPLE)]
        rows.append(
            {
                "Id": str(9101 + n),
                "Requester": name,
                "Requester email": email,
                "Subject": ["Where is my order?", "Damaged mug, refund?", "Change address"][n % 3],
                "Status": "open" if open_ else "solved",
                "Via": ["Mail", "Web Widget", "Chat"][n % 3],
                "Ticket type": ["question", "problem", "incident"][n % 3],
                "Priority": "normal",
                "Created at": created.strftime("%Y-%m-%d %H:%M"),
                "Updated at": (solved if not open_ else created).strftime("%Y-%m-%d %H:%M"),
                "Solved at": "" if open_ else solved.strftime("%Y-%m-%d %H:%M"),
                "First reply time in minutes": str(reply),
                "Full resolution time in minutes": ""
                if open_
                else str(int((solved - created).total_seconds() // 60)),
                "Order number": f"#{2010 + n}" if n % 2 == 0 else "",
            }
        )
    with (OUT / "zendesk_tickets_april2024.csv").open("w", encoding="utf-8", newline="") as fh:
        w = csv.DictWriter(fh, cols, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)


if __name__ == "__main__":
    shopify()
    taobao()
    amazon()
    conversations()
    zendesk()
