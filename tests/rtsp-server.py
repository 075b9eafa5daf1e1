#!/usr/bin/python3
"""A test RTSP server (issue 8, `rtsp://` sources): GStreamer's RtspServer
serving H.264 (x264, 320x240, 30 fps, a keyframe every `--gop` frames) and
AAC (44.1 kHz stereo) at rtsp://127.0.0.1:PORT/test, over TCP-interleaved or
UDP RTP, each client with its own live pipeline starting at 0.

Run with Debian's /usr/bin/python3 (the gi bindings are Debian's packages:
gir1.2-gst-rtsp-server-1.0, gstreamer1.0-plugins-{good,bad,ugly},
gstreamer1.0-libav, python3-gi; scripts/lib.sh VF_PACKAGES).

    rtsp-server.py PORT [--user U --password P] [--seconds N] [--gop N]

With `--user`, every request needs Basic credentials. With `--seconds`, the
stream ends (EOS, RTCP BYE) after N seconds of media. Prints "ready" once it
listens; stops on SIGTERM/SIGINT.
"""

import argparse
import signal
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("port", type=int)
    ap.add_argument("--user")
    ap.add_argument("--password", default="")
    ap.add_argument("--seconds", type=int, default=0)
    ap.add_argument("--gop", type=int, default=30)
    a = ap.parse_args()

    Gst.init(None)
    fps, rate, aac_frame = 30, 44100, 1024
    vlimit = f" num-buffers={a.seconds * fps}" if a.seconds else ""
    alimit = f" num-buffers={a.seconds * rate // aac_frame}" if a.seconds else ""
    launch = (
        f"( videotestsrc is-live=true pattern=ball{vlimit} "
        f"! video/x-raw,width=320,height=240,framerate={fps}/1 "
        f"! x264enc tune=zerolatency speed-preset=ultrafast key-int-max={a.gop} bitrate=400 "
        "! rtph264pay pt=96 config-interval=1 name=pay0 "
        f"audiotestsrc is-live=true wave=sine samplesperbuffer={aac_frame}{alimit} "
        f"! audio/x-raw,rate={rate},channels=2 ! avenc_aac "
        "! rtpmp4gpay pt=97 name=pay1 )"
    )
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(a.port))
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(launch)
    factory.set_shared(False)
    if a.user:
        auth = GstRtspServer.RTSPAuth()
        token = GstRtspServer.RTSPToken()
        token.set_string(GstRtspServer.RTSP_TOKEN_MEDIA_FACTORY_ROLE, "user")
        auth.add_basic(GstRtspServer.RTSPAuth.make_basic(a.user, a.password), token)
        server.set_auth(auth)
        perms = GstRtspServer.RTSPPermissions()
        perms.add_permission_for_role("user", GstRtspServer.RTSP_PERM_MEDIA_FACTORY_ACCESS, True)
        perms.add_permission_for_role(
            "user", GstRtspServer.RTSP_PERM_MEDIA_FACTORY_CONSTRUCT, True
        )
        factory.set_permissions(perms)
    server.get_mount_points().add_factory("/test", factory)
    if server.attach(None) == 0:
        print(f"cannot listen on 127.0.0.1:{a.port}", file=sys.stderr)
        sys.exit(1)

    loop = GLib.MainLoop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, sig, loop.quit)
    print("ready", flush=True)
    loop.run()


if __name__ == "__main__":
    main()
