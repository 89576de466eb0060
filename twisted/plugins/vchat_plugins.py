from twisted.application.service import ServiceMaker

vchat = ServiceMaker(
    "vchat", "vchat.tap", "Random one-to-one video chat server: WebSocket signaling and matching", "vchat"
)
