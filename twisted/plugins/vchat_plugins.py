from twisted.application.service import ServiceMaker

vchat = ServiceMaker(
    "vchat", "vchat.tap", "Random one-to-one video chat server: WebSocket signaling and matching", "vchat"
)
vchat_stun = ServiceMaker(
    "vchat-stun", "vchat.stun.tap", "STUN responder only, for its own machines", "vchat-stun"
)
