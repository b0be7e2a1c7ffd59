/* Lab helper: what a second device model, another dom0 process or a compromised toolstack
 * component could do - create and enable an ioreq server of its own for a domain and claim the
 * floppy controller's ports on it. Xen sends an access to the highest-id enabled server whose
 * ranges hold it, so this server would take the guest's FDC accesses past the filter; ioreq-filter
 * must crash the domain instead (shim/xen ServerWatch).
 *   second_ioreq_server DOMID   prints "created ioreq server N" and exits (the server stays). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <xendevicemodel.h>

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s DOMID\n", argv[0]);
        return 2;
    }
    const domid_t domid = (domid_t)strtoul(argv[1], NULL, 10);
    xendevicemodel_handle *dm = xendevicemodel_open(NULL, 0);
    if (!dm) {
        perror("xendevicemodel_open");
        return 1;
    }
    ioservid_t id = 0;
    if (xendevicemodel_create_ioreq_server(dm, domid, 0 /* HVM_IOREQSRV_BUFIOREQ_OFF (tools-only define) */, &id) != 0) {
        fprintf(stderr, "create_ioreq_server(domid %u): %s\n", domid, strerror(errno));
        return 1;
    }
    if (xendevicemodel_map_io_range_to_ioreq_server(dm, domid, id, 0, 0x3f0, 0x3f7) != 0 ||
        xendevicemodel_set_ioreq_server_state(dm, domid, id, 1) != 0) {
        fprintf(stderr, "claiming the FDC ports on server %u: %s\n", id, strerror(errno));
        return 1;
    }
    printf("created ioreq server %u\n", id);
    xendevicemodel_close(dm);
    return 0;
}
