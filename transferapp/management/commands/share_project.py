import getpass

from django.core.management.base import BaseCommand, CommandError

from transferapp.accounts import roles, sharing
from transferapp.audit import trail

from ._project_arg import add_project_arguments, owned_project


class Command(BaseCommand):
    help = ("Share one project with an existing user (by username or e-mail) with a role, or change their role "
            "if they are a member already. Recorded in the audit trail as the operator.")

    def add_arguments(self, parser):
        add_project_arguments(parser)
        parser.add_argument("--with", dest="who", required=True, help="the username or e-mail address to share with")
        parser.add_argument("--role", required=True, choices=roles.SHARABLE, help="the role they get")

    def handle(self, *args, user, project, who, role, **options):
        target = owned_project(user, project)
        # The audit entry names who ran it on this machine: the command bypasses every sign-in.
        with trail.acting_as(trail.Actor("operator:" + _operator())):
            member = target.memberships.filter(user=sharing.find_user(who)).select_related("user", "project").first()
            try:
                if member is not None:
                    sharing.change_role(member=member, role=role)
                else:
                    member = sharing.share(project=target, who=who, role=role, by=target.owner)
            except sharing.SharingRefused as exc:
                raise CommandError(str(exc)) from None
        self.stdout.write(f"{member.user.get_username()} is {member.role} in “{target.name}”.")


def _operator() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a bare container)
        return "unknown"
