//! `weft_protocol::identity::NodeId` renders and parses exactly libp2p's
//! `PeerId` for the same ed25519 key, without the protocol crate depending on
//! libp2p.

use libp2p::PeerId;
use libp2p::identity::{Keypair, PublicKey as Libp2pPublicKey, ed25519};
use weft_protocol::identity::{NodeId, SecretKey};

#[test]
fn node_id_matches_libp2p_peer_id() {
    for n in 0..32u8 {
        let seed = [n.wrapping_mul(37).wrapping_add(1); 32];
        let ours = SecretKey::from_seed(seed).public();
        let theirs = ed25519::PublicKey::try_from_bytes(ours.as_bytes()).unwrap();
        let peer = PeerId::from_public_key(&Libp2pPublicKey::from(theirs));
        let id = NodeId::new(ours);
        assert_eq!(id.to_string(), peer.to_string());
        assert_eq!(id.to_peer_id_bytes().to_vec(), peer.to_bytes());
        assert_eq!(peer.to_string().parse::<NodeId>().unwrap(), id);
    }
}

#[test]
fn same_seed_gives_same_key_in_libp2p() {
    let seed = [42u8; 32];
    let kp = Keypair::ed25519_from_bytes(seed).unwrap();
    let ours = NodeId::new(SecretKey::from_seed(seed).public());
    assert_eq!(ours.to_string(), kp.public().to_peer_id().to_string());
}
