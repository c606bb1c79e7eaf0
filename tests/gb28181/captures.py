"""Real and reference captures from the design notes (gb28181-device.md), with CRLF line ends restored."""

from __future__ import annotations


def crlf(text: str, body_eol: str = "\r\n") -> bytes:
    """Header lines joined with CRLF; the body keeps ``body_eol`` line ends and is GB2312 as on the wire."""
    head, sep, body = text.partition("\n\n")
    head_bytes = head.strip("\n").replace("\n", "\r\n").encode() + b"\r\n\r\n"
    return head_bytes + (body.replace("\n", body_eol).encode("gb2312") if sep else b"")


# Hikvision IPC <-> LiveGBS, with qop (section 2.2)
HIK_REGISTER_1 = crlf("""\
REGISTER sip:34020000002000000001@3402000000 SIP/2.0
Via: SIP/2.0/UDP 192.168.2.64:5060;rport;branch=z9hG4bK1235305492
From: <sip:34020000001320000264@3402000000>;tag=180588994
To: <sip:34020000001320000264@3402000000>
Call-ID: 575393982
CSeq: 1 REGISTER
Contact: <sip:34020000001320000264@192.168.2.64:5060>
Max-Forwards: 70
User-Agent: IP Camera
Expires: 3600
Content-Length: 0
""")

HIK_401 = crlf("""\
SIP/2.0 401 Unauthorized
Via: SIP/2.0/UDP 192.168.2.64:5060;rport=5060;received=192.168.2.64;branch=z9hG4bK1235305492
From: <sip:34020000001320000264@3402000000>;tag=180588994
To: <sip:34020000001320000264@3402000000>;tag=776284809
CSeq: 1 REGISTER
Call-ID: 575393982
WWW-Authenticate: Digest realm="3402000000",qop="auth",nonce="6eb1340d99c404a0e4d3b68d15d1d46f"
Content-Length: 0
""")

HIK_REGISTER_2 = crlf(
    """\
REGISTER sip:34020000002000000001@3402000000 SIP/2.0
Via: SIP/2.0/UDP 192.168.2.64:5060;rport;branch=z9hG4bK173969927
From: <sip:34020000001320000264@3402000000>;tag=180588994
To: <sip:34020000001320000264@3402000000>
Call-ID: 575393982
CSeq: 2 REGISTER
Contact: <sip:34020000001320000264@192.168.2.64:5060>
Authorization: Digest username="34020000001320000264", realm="3402000000", nonce="6eb1340d99c404a0e4d3b68d15d1d46f", uri="sip:34020000002000000001@3402000000", response="4c97657aa0412c25d4b862219b635c17", algorithm=MD5, cnonce="0a4f113b", qop=auth, nc=00000001
Max-Forwards: 70
User-Agent: IP Camera
Expires: 3600
Content-Length: 0
"""
)

HIK_KEEPALIVE = crlf(  # this capture's body has LF line ends: 176 bytes
    """\
MESSAGE sip:34020000002000000001@3402000000 SIP/2.0
Via: SIP/2.0/UDP 192.168.0.64:5060;rport;branch=z9hG4bK927308490
From: <sip:34020000001320000002@3402000000>;tag=287801969
To: <sip:34020000002000000001@3402000000>
Call-ID: 594186441
CSeq: 20 MESSAGE
Content-Type: Application/MANSCDP+xml
Max-Forwards: 70
User-Agent: IP Camera
Content-Length: 176

<?xml version="1.0" encoding="GB2312"?>
<Notify>
<CmdType>Keepalive</CmdType>
<SN>9</SN>
<DeviceID>34020000001320000002</DeviceID>
<Status>OK</Status>
<Info>
</Info>
</Notify>
""",
    body_eol="\n",
)

NVR_KEEPALIVE = crlf("""\
MESSAGE sip:34020000002000000001@3402000000 SIP/2.0
Via: SIP/2.0/UDP 192.168.1.64:5060;rport;branch=z9hG4bK1802933771
From: <sip:34020000001180000001@3402000000>;tag=902291475
To: <sip:34020000002000000001@3402000000>
Call-ID: 1209482553@192.168.1.64
CSeq: 20 MESSAGE
Content-Type: Application/MANSCDP+xml
Max-Forwards: 70
User-Agent: edge-agent/1.0
Content-Length: 169

<?xml version="1.0" encoding="GB2312"?>
<Notify>
<CmdType>Keepalive</CmdType>
<SN>43</SN>
<DeviceID>34020000001180000001</DeviceID>
<Status>OK</Status>
</Notify>
""")

WVP_CATALOG_QUERY_BODY = crlf("""\
X

<?xml version="1.0" encoding="GB2312"?>
<Query>
  <CmdType>Catalog</CmdType>
  <SN>10021</SN>
  <DeviceID>34020000001180000001</DeviceID>
</Query>
""").split(b"\r\n\r\n", 1)[1]

WVP_INVITE = crlf("""\
INVITE sip:34020000001310000001@192.168.1.64:5060 SIP/2.0
Via: SIP/2.0/UDP 192.168.1.10:5060;rport;branch=z9hG4bK-wvp-551188
From: <sip:34020000002000000001@3402000000>;tag=1766471833
To: <sip:34020000001310000001@192.168.1.64:5060>
Call-ID: 8f1c2a0b6e7d4a0e9b9d1a6f2c3e4d5f@192.168.1.10
CSeq: 112 INVITE
Max-Forwards: 70
User-Agent: WVP-Pro v2.7.x
Contact: <sip:34020000002000000001@192.168.1.10:5060>
Subject: 34020000001310000001:0200003792,34020000002000000001:0
Content-Type: APPLICATION/SDP
Content-Length: 286

v=0
o=34020000001180000001 0 0 IN IP4 192.168.1.10
s=Play
c=IN IP4 192.168.1.10
t=0 0
m=video 30012 TCP/RTP/AVP 96 97 98 99
a=recvonly
a=rtpmap:96 PS/90000
a=rtpmap:98 H264/90000
a=rtpmap:97 MPEG4/90000
a=rtpmap:99 H265/90000
a=setup:passive
a=connection:new
y=0200003792
""")

OUR_200_FOR_WVP_INVITE_BODY = crlf("""\
X

v=0
o=34020000001310000001 0 0 IN IP4 192.168.1.64
s=Play
c=IN IP4 192.168.1.64
t=0 0
m=video 40012 TCP/RTP/AVP 96
a=setup:active
a=connection:new
a=sendonly
a=rtpmap:96 PS/90000
y=0200003792
f=
""").split(b"\r\n\r\n", 1)[1]

HIK_200_TCP_ACTIVE = crlf("""\
SIP/2.0 200 OK
Via: SIP/2.0/UDP 192.168.0.110:15060;branch=z3hG9bK4de987b1737d494d9c63bb1464c9cdcb
From: <sip:34020000002000000001@192.168.0.110:15060>;tag=1034
To: <sip:34020000001310000001@192.168.0.64:5060>;tag=1561889054
Call-ID: 445efb2b5134487788334cd6acafe0a2
CSeq: 35 INVITE
Contact: <sip:34020000001320000002@192.168.0.64:5060>
Content-Type: application/sdp
User-Agent: IP Camera
Content-Length: 206

v=0
o=34020000001320000002 2851 2851 IN IP4 192.168.0.64
s=Play
c=IN IP4 192.168.0.64
t=0 0
m=video 15060 TCP/RTP/AVP 96
a=setup:passive
a=sendonly
a=rtpmap:96 PS/90000
a=filesize:0
y=0000010000
""")

HIK_ALARM_BODY = """\
<?xml version="1.0" encoding="GB2312"?>
<Notify>
<CmdType>Alarm</CmdType>
<SN>99</SN>
<DeviceID>34020000001310000001</DeviceID>
<AlarmPriority>4</AlarmPriority>
<AlarmMethod>5</AlarmMethod>
<AlarmTime>2025-04-22T11:26:02</AlarmTime>
<AlarmDescription>motion</AlarmDescription>
<Longitude>117.2272</Longitude>
<Latitude>31.8206</Latitude>
<Info>
<AlarmType>2</AlarmType>
</Info>
</Notify>
""".replace("\n", "\r\n").encode("gb2312")

HIK_CATALOG_RESPONSE_BODY = """\
<?xml version="1.0" encoding="GB2312"?>
<Response>
<CmdType>Catalog</CmdType>
<SN>10021</SN>
<DeviceID>34020000001320000002</DeviceID>
<SumNum>2</SumNum>
<DeviceList Num="2">
<Item>
<DeviceID>34020000001310000001</DeviceID>
<Name>通道1 & gate</Name>
<Manufacturer>Hikvision</Manufacturer>
<Status>ON</Status>
</Item>
</DeviceList>
</Response>
""".encode("gb2312")
